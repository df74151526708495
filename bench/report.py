"""Markdown tables and matplotlib plots from the benchmarks' JSON results (pure formatting, no measuring)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

PATH_LABELS = {"direct": "direct to upstream", "engine": "through the engine",
               "seed": "seed pattern (baseline)"}


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "met" if value else "MISSED"
    if isinstance(value, float):
        return f"{value:,.4g}" if abs(value) < 10 else f"{value:,.1f}"
    return str(value)


def table(rows: list[dict[str, Any]], columns: list[tuple[str, str]]) -> str:
    head = "| " + " | ".join(title for _, title in columns) + " |"
    rule = "|" + "|".join("---" for _ in columns) + "|"
    body = ["| " + " | ".join(_fmt(row.get(key)) for key, _ in columns) + " |" for row in rows]
    return "\n".join([head, rule, *body])


ENGINE_COLUMNS = [
    ("mode", "mode"), ("level", "streams"), ("path", "path"), ("tok_per_s", "tok/s"),
    ("ttft_p50_ms", "TTFT p50 ms"), ("ttft_p99_ms", "TTFT p99 ms"), ("itl_p99_ms", "ITL p99 ms"),
    ("itl_p99_steady_ms", "ITL p99 steady ms"),
    ("relay_cpu_s_per_1k_tokens", "relay CPU s/1k tok"),
    ("upstream_cpu_s_per_1k_tokens", "upstream CPU s/1k"),
    ("client_cpu_s_per_1k_tokens", "client CPU s/1k"), ("complete_streams", "complete"),
    ("ttft_censored", "no token by deadline"),
]
RATIO_COLUMNS = [
    ("mode", "mode"), ("level", "streams"), ("engine_over_direct", "engine/direct tok/s"),
    ("seed_over_direct", "seed/direct tok/s"), ("engine_over_seed", "engine/seed tok/s"),
    ("ttft_p50_added_ms", "added TTFT p50 ms"), ("ttft_p99_added_ms", "added TTFT p99 ms"),
    ("itl_p99_added_ms", "added ITL p99 ms"), ("itl_p99_steady_added_ms", "added ITL p99 steady ms"),
]
PROBE_COLUMNS = [
    ("requests_per_path", "requests per path"), ("direct_p50_ms", "direct p50 ms"),
    ("engine_p50_ms", "engine p50 ms"), ("added_p50_ms", "added p50 ms"), ("direct_p99_ms", "direct p99 ms"),
    ("engine_p99_ms", "engine p99 ms"), ("added_p99_ms", "added p99 ms"),
]
TARGET_COLUMNS = [("target", "target"), ("value", "measured"), ("met", "result")]


def machine_line(result: dict[str, Any]) -> str:
    m = result["machine"]
    load = ", ".join(f"{x:.2f}" for x in m["loadavg_at_start"])
    return (f"Machine: {m['nproc']} CPUs ({m['cpu']}), Python {m['python']}, load average at start {load}; "
            f"run took {result['duration_s']} s.")


def publish(name: str, body: dict[str, Any], args: Any, started: float,
            write: Callable[[dict[str, Any], Path, Path], None]) -> dict[str, Any]:
    """Wrap a benchmark's figures with the machine and config, write `<out>/<name>.json`, the markdown
    and the plots, and print the markdown."""
    from procs import machine

    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    # machine() is read now, at the end: the load average at start is the one `started` was taken with,
    # when the caller recorded it (body["loadavg_at_start"]).
    host = machine()
    if "loadavg_at_start" in body:
        host["loadavg_at_start"] = body.pop("loadavg_at_start")
    result = {"benchmark": name, "machine": host, "config": config,
              "duration_s": round(time.time() - started, 1), **body}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    write(result, args.out / f"{name}.md", args.img)
    print((args.out / f"{name}.md").read_text())
    return result


def engine_markdown(result: dict[str, Any]) -> str:
    return "\n\n".join([
        machine_line(result),
        "### Targets (paced)\n\n" + table(result["targets"], TARGET_COLUMNS),
        "### Time to first token at 1 stream (probe)\n\n"
        + table([result.get("ttft_probe") or {}], PROBE_COLUMNS),
        "### Ratios\n\n" + table(result["ratios"], RATIO_COLUMNS),
        "### Every run\n\n" + table(result["runs"], ENGINE_COLUMNS),
    ]) + "\n"


def _plot_engine(result: dict[str, Any], img_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    img_dir.mkdir(parents=True, exist_ok=True)
    written = []
    runs = result["runs"]
    for mode in dict.fromkeys(r["mode"] for r in runs):
        fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
        metrics = [("tok_per_s", "output tokens/s", True), ("ttft_p50_ms", "TTFT p50 (ms)", True),
                   ("itl_p99_ms", "inter-token latency p99 (ms)", True)]
        for ax, (key, label, log) in zip(axes, metrics, strict=True):
            for path, style in (("direct", "o-"), ("engine", "s-"), ("seed", "x--")):
                pts = [(r["level"], r[key]) for r in runs if r["mode"] == mode and r["path"] == path
                       and r.get(key) is not None]
                if pts:
                    ax.plot(*zip(*pts, strict=True), style, label=PATH_LABELS[path])
            ax.set_xscale("log", base=2)
            if log:
                ax.set_yscale("log")
            ax.set_xlabel("concurrent streams")
            ax.set_title(label)
            ax.grid(True, which="both", alpha=0.3)
        axes[0].legend()
        fig.suptitle(f"engine streaming, {mode} ({result['config']['tokens']} tokens per stream)")
        fig.tight_layout()
        path = img_dir / f"{result['benchmark']}_{mode}.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        written.append(path)
    return written


def write_engine_report(result: dict[str, Any], md_path: Path, img_dir: Path) -> None:
    md_path.write_text(engine_markdown(result))
    _plot_engine(result, img_dir)


OPERATOR_COLUMNS = [
    ("models", "models"), ("status_s", "children+status s"), ("converge_s", "converge s (kopf done)"),
    ("requests_per_model", "API requests/model"),
    ("writes_per_model", "writes/model"), ("peak_rss_mb", "peak RSS MB"), ("quiet_s", "quiet s"),
    ("quiet_writes", "quiet writes"), ("quiet_requests_per_s", "quiet requests/s"),
    ("restart_resync_s", "restart resync s"), ("restart_writes", "restart writes"),
    ("restart_peak_rss_mb", "restart peak RSS MB"),
]


def operator_markdown(result: dict[str, Any]) -> str:
    return "\n\n".join([
        machine_line(result),
        "### Targets\n\n" + table(result["targets"], TARGET_COLUMNS),
        "### Every size\n\n" + table(result["sizes"], OPERATOR_COLUMNS),
    ]) + "\n"


def _plot_operator(result: dict[str, Any], img_dir: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    img_dir.mkdir(parents=True, exist_ok=True)
    sizes = result["sizes"]
    xs = [str(r["models"]) for r in sizes]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    panels = [("converge_s", "time to converge (s)", 60),
              ("requests_per_model", "API requests per model", None),
              ("peak_rss_mb", "operator peak RSS (MB)", 200)]
    for ax, (key, title, limit) in zip(axes, panels, strict=True):
        ax.bar(xs, [r.get(key) or 0 for r in sizes], color="tab:blue")
        if limit is not None:
            ax.axhline(limit, color="tab:red", linestyle="--", label=f"target {limit}")
            ax.legend()
        ax.set_xlabel("SGLangModels created at once")
        ax.set_title(title)
    fig.tight_layout()
    path = img_dir / f"{result['benchmark']}.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def write_operator_report(result: dict[str, Any], md_path: Path, img_dir: Path) -> None:
    md_path.write_text(operator_markdown(result))
    _plot_operator(result, img_dir)
