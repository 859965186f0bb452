"""The sweep search: walk rates upward until the SLO breaks, sharpen the knee, say its bound.

A knee is a bound with the step that broke it: ``exact`` when a server step broke the SLO
(the knee is the last rate that held, ``next_msg_s`` the first that failed); ``lower`` when
the sweep never broke, or broke only because the driver could not keep up (the server held
at least that much); ``none`` when the first rate already failed.
"""


def slo_text(o):
    return (f"p99 <= {o['slo_p99_ms']:g} ms, acked >= {100 * o['slo_ok']:g} %, "
            f"achieved >= {100 * o['slo_achieved']:g} % of target")


def slo_breach(row, rate, o):
    """Why a sweep step broke the SLO, or "" when it held."""
    if not row["transport"]:
        return "server failed"
    if row["attempted"] == 0:
        return "nothing measured"
    if row["driver_bound"]:
        return "driver-bound (the driver, not the server, limited this step)"
    if row["ok"] < o["slo_ok"] * row["attempted"]:
        return f"only {100 * row['ok'] / row['attempted']:.2f} % acked"
    if row["achieved_rate"] < o["slo_achieved"] * rate:
        return f"achieved {row['achieved_rate']:.0f} msg/s"
    p99 = row["p99_us"]
    if not p99 == p99:
        return "too few samples for a p99"
    slo_us = o["slo_p99_ms"] * 1000
    if o.get("precision"):  # judged on the step's own p99 interval, not on its point
        low, high = row.get("p99_step_ci_low"), row.get("p99_step_ci_high")
        if not (low == low and high == high):
            return "no p99 interval (too few samples)"
        if high > slo_us:
            return (f"p99 {p99 / 1000:.1f} ms [{low / 1000:.1f}–{high / 1000:.1f}] "
                    f"{'>' if low > slo_us else 'straddles'} {o['slo_p99_ms']:g} ms")
        return ""
    if not p99 <= slo_us:
        return f"p99 {p99 / 1000:.1f} ms > {o['slo_p99_ms']:g} ms"
    return ""


def search(step, o, measure):
    """Run the sweep of ``step``; ``measure(sub_step, attempt)`` returns the step's rows.
    Returns (rows, knee record): one set of rows per rate (a retried rate keeps only its
    last measurement). A rate that breaks the SLO is measured once more before the search
    moves down (one bad step on a shared machine must not set the knee); the knee record's
    ``attempts`` lists every rate's outcomes in order."""
    rates = list(step.sweep_rates)
    refine = 0 if o.get("quick") else o.get("sweep_refine", 2)
    by_rate, retried, attempt, outcomes = {}, set(), 0, []
    passed, failed, failed_reason, driver_break = None, None, "", False
    while rates:
        rate = rates.pop(0)
        rows = measure(step.at_rate(rate, o), attempt)
        attempt += 1
        broken = slo_breach(rows[0], rate, o)
        outcomes.append(f"{rate:g}:{'fail' if broken else 'pass'}")
        for row in rows:
            row["slo_pass"] = not broken
        by_rate[rate] = rows
        if broken and rate not in retried:
            retried.add(rate)  # measured once more before it can end the sweep
            rates.insert(0, rate)
            continue
        if broken and rows[0]["driver_bound"] and failed is not None and not driver_break:
            rates = []  # a refinement the driver could not measure: the server's break stands
            continue
        if broken and (failed is None or rate < failed):
            failed, failed_reason = rate, f"{broken} at {rate:g} msg/s"
            driver_break = bool(rows[0]["driver_bound"])
        elif not broken:
            passed = max(passed or 0.0, rate)
        if failed is not None:
            rates = []
            if passed is not None and refine > 0 and not driver_break:
                refine -= 1
                mid = round((passed * failed) ** 0.5, 1)
                rates = [mid] if passed < mid < failed else []
    if passed is None:
        bound, reason = "none", f"first rate failed: {failed_reason}"
    elif failed is None:
        bound, reason = "lower", f"no break up to {max(by_rate):g} msg/s"
    elif driver_break:
        bound, reason = "lower", f"the driver broke first: {failed_reason}"
    else:
        bound, reason = "exact", failed_reason
    knee = dict(variant=step.variant, knee_msg_s=passed if passed is not None else 0.0,
                next_msg_s=failed if failed is not None else float("nan"), bound=bound,
                slo=slo_text(o), reason=reason, repeat=step.repeat, client=step.client,
                attempts=" ".join(outcomes))
    return [r for rate in sorted(by_rate) for r in by_rate[rate]], knee
