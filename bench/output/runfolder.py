"""A run's results folder as it fills: rows, resources, knees and meta, written after every
step (atomically), so nothing measured is lost when a later step or the harness dies."""
import os
import shutil

import pandas as pd

from bench import SCHEMA_VERSION, __version__
from bench.analysis import aggregate, columns
from bench.errors import ResultsWriteError
from bench.output import results


def writing(run_dir, write):
    """Run a results write; a failure is a ResultsWriteError (not any OSError elsewhere)."""
    try:
        write()
    except OSError as exc:
        raise ResultsWriteError(f"{run_dir}: {exc}") from exc


def recorded(options):
    """The options as meta.json keeps them: ``--app-env`` values of secret keys masked."""
    from bench.plan.ownapp import masked

    return dict(options, app_env=masked(options["app_env"])) if options.get("app_env") \
        else options


class RunFolder:
    def __init__(self, run_dir, meta):
        self.run_dir, self.meta = run_dir, meta
        self.rows, self.resource_rows, self.knees = [], [], []
        self.tables = {}  # scenario tables beside summary.csv (capacity.csv): name -> rows
        self.work = os.path.join(run_dir, ".work")
        os.makedirs(self.work, exist_ok=True)

    @staticmethod
    def new_meta(steps, options, variants, pinning):
        return dict(
            schema_version=SCHEMA_VERSION, harness_version=__version__,
            git_commit=results.git_commit(), started_utc=results.utc_now().isoformat(),
            finished_utc=None, status="running", host=results.host_info(),
            packages={"default": results.package_versions()}, variants=variants,
            plan=dict(options=recorded(options), steps=len(steps),
                      order=[f"{s.variant}/{s.scenario}/{s.load_point}/{s.repeat}"
                             f"/{s.client}" for s in steps]),
            pinning=pinning, calibration=options.get("calibration"))

    def start(self):
        writing(self.run_dir, lambda: results.write_meta(self.run_dir, self.meta))

    def add(self, rows, resources=(), knee=None):
        self.rows.extend(rows)
        self.resource_rows.extend(resources)
        if knee:
            self.knees.append(knee)
        writing(self.run_dir, self.flush)

    def table(self, name, rows):
        """Rows for a scenario table (``capacity.csv``), written at once."""
        self.tables.setdefault(name, []).extend(rows)
        writing(self.run_dir, self.flush)

    def samples(self, name, frame, hlog=None, events=None):
        """One step's per-message rows, its interval log (``hlog/``) and its server events
        (``events/``), each written atomically."""
        def write():
            results.write_part(self.run_dir, name, frame)
            if hlog:
                results.write_hlog(self.run_dir, name, hlog)
            if events is not None:
                results.write_events(self.run_dir, name, events)
        writing(self.run_dir, write)

    def supersede(self, name):
        """Mark a step's samples as superseded by a longer attempt of the same step (their
        ``phase`` becomes ``superseded``): kept, but out of every ``measure`` selection."""
        def write():
            frame = results.read_part(self.run_dir, name)
            if frame is not None:
                frame["phase"] = "superseded"
                results.write_part(self.run_dir, name, frame)
        writing(self.run_dir, write)

    def flush(self):
        rows = self.rows + aggregate.aggregate(self.rows)
        results.write_summary(self.run_dir, rows, columns.ORDER)
        if self.resource_rows:
            results.atomic_csv(pd.DataFrame(self.resource_rows),
                               os.path.join(self.run_dir, "resources.csv"))
        if self.knees:
            results.atomic_csv(pd.DataFrame(self.knees),
                               os.path.join(self.run_dir, "knees.csv"))
        for name, rows in self.tables.items():
            results.atomic_csv(pd.DataFrame(rows), os.path.join(self.run_dir, name))

    def finish(self, status, stopped_by=None):
        """Write what was measured, whatever happened; the first write error is re-raised
        after every other write has been tried."""
        self.meta.update(status=status, finished_utc=results.utc_now().isoformat(),
                         steps_done=len(self.rows))
        if stopped_by:
            self.meta["stopped_by"] = stopped_by
        first_error = None
        for write in (self.flush, lambda: results.join_parts(self.run_dir),
                      lambda: results.write_meta(self.run_dir, self.meta),
                      lambda: results.point_latest(self.run_dir)):
            try:
                write()
            except OSError as exc:
                first_error = first_error or exc
        shutil.rmtree(self.work, ignore_errors=True)
        if first_error:
            raise ResultsWriteError(f"{self.run_dir}: {first_error}") from first_error
