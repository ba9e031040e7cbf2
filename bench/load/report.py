"""The load test's report: report.json, report.md and PNG plots (matplotlib)."""
from __future__ import annotations

import json
from pathlib import Path


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def summarize(r: dict) -> dict:
    samples = r["samples"]
    first, last = samples[0], samples[-1]
    span = max(1e-9, last["t"] - first["t"])
    rates = [(b["applied"] - a["applied"]) / max(1e-9, b["t"] - a["t"]) for a, b in zip(samples, samples[1:])]
    applied = last["applied"] - first["applied"]
    reads = {d: [ms for _, ms in v] for d, v in r["read_latency"].items()}
    subs = r.get("subscribers") or {}
    cpu = last["cpu"]
    redis_cpu = (last["redis_cpu"] - first["redis_cpu"]) if first.get("redis_cpu") is not None else None
    mem = (last["redis_memory"] - first["redis_memory"]) if first.get("redis_memory") is not None else None
    return {
        "seconds": span, "updates_sent": r["sent"], "updates_applied": applied,
        "ingest_per_s_mean": applied / span, "ingest_per_s_peak": max(rates) if rates else 0,
        "backlog_max": max((s["backlog"] or 0) for s in samples),
        "read_ms": {d: {"n": len(v), "p50": pct(v, .5), "p95": pct(v, .95), "p99": pct(v, .99)} for d, v in reads.items()},
        "subscriber_ms": {"n": len(subs.get("latencies", [])), "p50": pct(subs.get("latencies", []), .5),
                          "p99": pct(subs.get("latencies", []), .99),
                          "states_per_s": subs.get("states", 0) / max(1e-9, subs.get("seconds", 1))},
        "redis_bytes_per_node": mem / r["nodes"] if mem is not None and r["nodes"] else None,
        "redis_cpu_us_per_update": redis_cpu / applied * 1e6 if redis_cpu is not None and applied else None,
        "cpu_seconds": cpu, "cpu_share": {k: v / span for k, v in cpu.items()},
        "errors": r["errors"], "check": r["check"],
    }


def markdown(r: dict, s: dict) -> str:
    a = r["args"]
    lines = [
        f"# Load test: {a['jobs']:,} jobs, {a['readers']} readers, {a['subscribers']} subscribers",
        "",
        f"Machine: {r['machine']}; Redis {r.get('redis_version') or '(external)'}; RabbitMQ on the same host. "
        f"Command: `python -m bench.load --jobs {a['jobs']} --rate {a['rate']:g} --seconds {a['seconds']:g} "
        f"--readers {a['readers']} --subscribers {a['subscribers']}`",
        "",
        "| measure | value |", "|---|---:|",
        f"| updates sent by the jobs / applied | {s['updates_sent']:,} / {s['updates_applied']:,} |",
        f"| ingest, mean over the run (until drained) | {s['ingest_per_s_mean']:,.0f} updates/s |",
        f"| ingest, best second | {s['ingest_per_s_peak']:,.0f} updates/s |",
        f"| AMQP backlog, highest | {s['backlog_max']:,} messages |",
        f"| write → subscriber latency p50 / p99 ({s['subscriber_ms']['n']:,} samples) | "
        f"{s['subscriber_ms']['p50']:.0f} / {s['subscriber_ms']['p99']:.0f} ms |",
        f"| node states delivered to subscribers | {s['subscriber_ms']['states_per_s']:,.0f}/s |",
    ]
    if s["redis_bytes_per_node"] is not None:
        lines.append(f"| Redis memory per node | {s['redis_bytes_per_node']:,.0f} bytes |")
    if s["redis_cpu_us_per_update"] is not None:
        lines.append(f"| Redis CPU per update | {s['redis_cpu_us_per_update']:.1f} µs |")
    lines += ["", "REST reads (ms):", "", "| depth | reads | p50 | p95 | p99 |", "|---:|---:|---:|---:|---:|"]
    for d, v in s["read_ms"].items():
        lines.append(f"| {d} | {v['n']:,} | {v['p50']:.1f} | {v['p95']:.1f} | {v['p99']:.1f} |")
    lines += ["", "CPU used over the run (2 cores = 200 %):", "", "| process | CPU seconds | share |", "|---|---:|---:|"]
    for k, v in sorted(s["cpu_seconds"].items()):
        lines.append(f"| {k} | {v:.1f} | {s['cpu_share'][k]:.0%} |")
    c = s["check"]
    lines += ["", f"Correctness: {c['checked']:,} nodes checked against what the jobs sent; "
                  f"{c['lost']} lost, {c['wrong']} wrong.", ""]
    lines += ["Errors: " + (", ".join(f"{k}: {v}" for k, v in s["errors"].items()) if s["errors"] else "none"), ""]
    lines += ["![throughput](throughput.png) ![backlog](backlog.png) ![reads](reads.png) "
              "![subscribers](subscribers.png)", ""]
    return "\n".join(lines)


def plots(r: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = r["samples"]
    t = [s["t"] for s in samples]
    rates = [0] + [(b["applied"] - a["applied"]) / max(1e-9, b["t"] - a["t"]) for a, b in zip(samples, samples[1:])]
    for name, ys, label in (("throughput", rates, "updates applied per second"),
                            ("backlog", [s["backlog"] or 0 for s in samples], "AMQP backlog (messages)")):
        fig, ax = plt.subplots(figsize=(7, 3))
        ax.plot(t, ys)
        ax.set_xlabel("seconds")
        ax.set_ylabel(label)
        fig.tight_layout()
        fig.savefig(out / f"{name}.png", dpi=90)
        plt.close(fig)
    fig, ax = plt.subplots(figsize=(7, 3))
    t0 = min((ts for v in r["read_latency"].values() for ts, _ in v), default=0)
    for d, v in r["read_latency"].items():
        if v:
            ax.scatter([ts - t0 for ts, _ in v], [ms for _, ms in v], s=2, label=f"depth {d}")
    ax.set_yscale("log")
    ax.set_xlabel("seconds")
    ax.set_ylabel("REST read latency (ms)")
    ax.legend(markerscale=5, fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "reads.png", dpi=90)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(7, 3))
    lat = (r.get("subscribers") or {}).get("latencies", [])
    if lat:
        ax.hist([min(x, 2000) for x in lat], bins=80)
    ax.set_xlabel("write → subscriber latency (ms, clipped at 2 s)")
    ax.set_ylabel("node states")
    fig.tight_layout()
    fig.savefig(out / "subscribers.png", dpi=90)
    plt.close(fig)


def write_report(r: dict, out: Path) -> None:
    s = summarize(r)
    (out / "report.json").write_text(json.dumps({"summary": s, **{k: v for k, v in r.items() if k != "subscribers"},
                                                 "subscribers": {k: v for k, v in (r.get("subscribers") or {}).items()
                                                                 if k != "latencies"}}, indent=1))
    (out / "report.md").write_text(markdown(r, s))
    plots(r, out)
