"""Progress: a tqdm bar on a terminal, one plain line per step otherwise (CI logs, pipes)."""
import sys


class Progress:
    def __init__(self, total, stream=sys.stderr):
        self.stream = stream
        self.bar = None
        if stream.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, file=stream, unit="step", dynamic_ncols=True)
        self.total = total

    def step(self, step):
        text = f"{step.variant} {step.scenario} {step.load_point} #{step.repeat}"
        if self.bar:
            self.bar.set_description_str(text)
        else:
            print(f"[{step.index + 1}/{self.total}] {text} ...", file=self.stream, flush=True)

    def done(self, step, row):
        status = "ok" if row["valid"] else "INVALID"
        p50 = row.get("p50_us")
        summary = f"{row['transport'] or 'failed'} p50={p50:.0f}us {status}" \
            if p50 == p50 and p50 is not None else f"{row['transport'] or 'failed'} {status}"
        if self.bar:
            self.bar.update(1)
            self.bar.set_postfix_str(summary)
        else:
            print(f"    {summary}" + (f" ({row['note'][:120]})" if row.get("note") else ""),
                  file=self.stream, flush=True)

    def close(self):
        if self.bar:
            self.bar.close()
