"""`toolkit gate calibrate|curve`: set the request threshold for a budget; compare request policies."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from toolkit.cli.common import check_number, check_out, check_seed, check_threads, console, parse_csv
from toolkit.errors import ToolkitError

DEFAULT_POLICIES = "gate,mrd,random,lag,lof,ocsvm,oracle"  # toolkit.gate.policies.DEFAULT_POLICIES (no torch here)

app = typer.Typer(no_args_is_help=True)


@app.callback()
def _group() -> None:
    """Sub-commands of `toolkit gate`."""


def _parse_lags(text: Optional[str]) -> Optional[tuple[int, int]]:
    """'1-5' or '3' -> (lag_min, lag_max)."""
    if text is None:
        return None
    try:
        parts = [int(p) for p in text.split("-")]
    except ValueError:
        raise ToolkitError(f"--lags expects N or MIN-MAX (clicks), got '{text}'") from None
    lo, hi = (parts[0], parts[0]) if len(parts) == 1 else (parts[0], parts[-1])
    if len(parts) > 2 or not 1 <= lo <= hi <= 1_000_000:
        raise ToolkitError(f"--lags expects N or MIN-MAX with 1 <= MIN <= MAX <= 1000000, got '{text}'")
    return lo, hi


def _set_threads(threads: Optional[int]) -> None:
    if threads is not None:
        check_threads(threads)
        import torch

        torch.set_num_threads(threads)


@app.command("calibrate")
def calibrate(
    gate: Path = typer.Argument(..., help="gate run dir from `toolkit train gate`"),
    data: Path = typer.Option(..., "--data", help="dataset dir holding the recent decisions"),
    budget: float = typer.Option(0.1, "--budget", help="request budget: share of decisions that may ask the cloud, (0, 1]"),
    split: str = typer.Option("valid", "--split", help="which decisions are 'recent': valid (default), test or train"),
    base: Optional[Path] = typer.Option(None, "--model", help="the gate's base run (cocorrrec or duet), if it moved"),
    threads: Optional[int] = typer.Option(None, help="torch threads (default: torch's choice)"),
) -> None:
    """Threshold = the budget-quantile of MRS on recent decisions (request when MRS <= threshold)."""
    check_number(budget, "--budget", lo=0, lo_open=True, hi=1)  # before torch: a bad flag answers at once
    check_threads(threads)
    if split not in ("valid", "test", "train"):
        raise ToolkitError(f"--split: unknown '{split}' (valid: valid, test, train)")
    from toolkit.cli.reporter import ConsoleReporter
    from toolkit.data import load_dataset
    from toolkit.gate.calibrate import THRESHOLD, check_budget
    from toolkit.gate.calibrate import calibrate as run_calibrate

    check_budget(budget)
    _set_threads(threads)
    result = run_calibrate(gate, load_dataset(data), budget, split, base, ConsoleReporter(console))
    console.print(f"budget {result['budget']:.3f}: threshold {result['threshold']:.6f} -> request rate "
                  f"{result['achieved_request_rate']:.4f} on {result['n_users']:,} {split} users "
                  f"({result['n_samples']:,} decisions, lags {result['lags'][0]}..{result['lags'][1]})")
    console.print(f"written to {Path(gate) / THRESHOLD}")


@app.command("curve")
def curve(
    gate: Path = typer.Argument(..., help="gate run dir from `toolkit train gate`"),
    data: Path = typer.Option(..., "--data", help="dataset dir (test split = the decisions evaluated)"),
    out: Path = typer.Option(..., "--out", help="output dir for curve.json and curve.png"),
    budgets: str = typer.Option("0.05,0.1,0.2,0.3,0.5,0.7,1.0", "--budgets", help="comma-separated request budgets"),
    policies: str = typer.Option(DEFAULT_POLICIES, "--policies",
                                 help="any of gate, mrd, dm, random, lag, lof, ocsvm, oracle"),
    lags: Optional[str] = typer.Option(None, "--lags", help="stale lag in clicks, N or MIN-MAX (default: the gate's)"),
    base: Optional[Path] = typer.Option(None, "--model", help="the gate's base run (cocorrrec or duet), if it moved"),
    seed: int = typer.Option(0, help="seed of the lags drawn and of the random policy"),
    fit_cap: int = typer.Option(5000, help="recent decisions LOF / OC-SVM are fitted on (subsampled)"),
    no_timing: bool = typer.Option(False, "--no-timing", help="skip the per-decision latency measurement"),
    threads: Optional[int] = typer.Option(None, help="torch threads for scoring (latency is always 1 thread)"),
    force: bool = typer.Option(False, "--force", help="replace an existing output dir"),
) -> None:
    """Quality vs request frequency for each policy, with always / never / none endpoints."""
    check_threads(threads)
    check_seed(seed)
    check_number(fit_cap, "--fit-cap", lo=25, hi=10_000_000)
    lag_range = _parse_lags(lags)
    for b in budgets.split(","):  # the full parse (gate.curve) imports torch: refuse obvious nonsense first
        try:
            check_number(float(b), "--budgets", lo=0, lo_open=True, hi=1) if b.strip() else None
        except ValueError:
            raise ToolkitError(f"--budgets must be comma-separated numbers, got '{budgets}'") from None
    check_out(out)
    from toolkit.io import check_apart, check_not_symlink

    check_apart(out, {"gate run": gate, "dataset": data, "base run (--model)": base})
    if out.exists() and any(out.iterdir()) and not force:  # before any work
        raise ToolkitError(f"output dir {out} is not empty (use --force to replace it)")
    if force:
        check_not_symlink(out)
    for what, p in (("gate run", gate), ("dataset dir", data), ("base run (--model)", base)):
        if p is not None and not p.exists():
            raise ToolkitError(f"{what} not found: {p}")
    from toolkit.cli.reporter import ConsoleReporter
    from toolkit.data import load_dataset
    from toolkit.gate.curve import parse_budgets, run_curve
    from toolkit.gate.policies import POLICIES

    _set_threads(threads)
    budget_list = parse_budgets(budgets)
    policy_list = parse_csv(policies, "policy", POLICIES)
    if out.exists() and any(out.iterdir()) and not force:
        raise ToolkitError(f"output dir {out} is not empty (use --force to replace it)")
    result = run_curve(gate, load_dataset(data), out, budget_list, policy_list, base, lag_range, seed, fit_cap,
                       force=True, timing=not no_timing, reporter=ConsoleReporter(console))
    console.print(curve_table(result))
    console.print(summary_lines(result))
    console.print(share_table(result))
    console.print(f"curve written to {out} (curve.json, curve.png)")


def curve_table(result: dict) -> Table:
    t = Table(title=f"request policies on {result['decisions']:,} test decisions (lags {result['lags'][0]}.."
                    f"{result['lags'][1]}; {result['request_bytes']['sent']:,} B up / "
                    f"{result['request_bytes']['received']:,} B down per request)")
    t.add_column("policy", no_wrap=True, min_width=12)
    for col, just in (("budget", "right"), ("rate", "right"), ("UAUC", "right"),
                      ("NDCG@10", "right"), ("HR@10", "right"), ("KB up/1k", "right"), ("KB down/1k", "right")):
        t.add_column(col, justify=just)

    def row(label, budget, p, style=None):
        t.add_row(label, budget, f"{p['request_rate']:.3f}", f"{p['uauc']:.4f}", f"{p['ndcg@10']:.4f}",
                  f"{p['hr@10']:.4f}", f"{p['bytes_sent_per_1000'] / 1e3:,.0f}",
                  f"{p['bytes_received_per_1000'] / 1e3:,.0f}", style=style)

    for name in ("always", "never", "none"):
        row(name, "-", result["endpoints"][name], style="bold")
    for name, entry in result["policies"].items():
        label = name if entry["deployable"] else f"{name}*"
        for p in entry["points"]:
            row(label, f"{p['budget']:.2f}", p)
        if "native" in entry:
            row(f"{name}@native", "-", entry["native"], style="dim")
    if any(not e["deployable"] for e in result["policies"].values()):
        t.caption = "* knows the test labels: an upper bound, not a deployable policy"
    return t


def share_table(result: dict) -> Table:
    """Per policy: the share of the always-over-never gain it recovers at the summary's budget, and (NDCG@10) at
    exactly that request rate; whether the gate is at or above it at the gate's own rate, budget by budget."""
    from toolkit.gate.curve import SHOWN

    s = result["summary"]
    exact, above = s.get("recovered_share_at_exact_rate", {}), s.get("gate_at_or_above", {})
    b = f"{s['budget']:.0%}"
    t = Table(title=f"share of the always-over-never gain recovered at a {b} budget")
    t.add_column("policy", no_wrap=True)
    for col in ("UAUC", "NDCG@10", "HR@10", f"NDCG@10, exactly {b} requests", "gate >= it (NDCG@10 budgets)"):
        t.add_column(col, justify="right")
    pct = lambda v, f=".0%": "n/a" if v is None else format(v, f)  # noqa: E731
    for name, share in s["recovered_share"].items():
        deployable = result["policies"].get(name, {}).get("deployable", True)
        t.add_row(name if deployable else f"{name}*", *(pct(share.get(k)) for k in SHOWN),
                  pct(exact.get(name), ".1%"), above.get(name, {}).get("ndcg@10", "-"))
    return t


def summary_lines(result: dict) -> str:
    s = result["summary"]
    se = s.get("always_minus_never_se", {})
    lines = ["always - never (paired s.e.): " + ", ".join(
        f"{k} {v:+.4f} ({se.get(k, float('nan')):.4f})" for k, v in s["always_minus_never"].items())]
    nse = s.get("always_minus_none_se", {})
    if "always_minus_none" in s:
        lines.append("always - none (what a fresh correction is worth at all): " + ", ".join(
            f"{k} {v:+.4f} ({nse.get(k, float('nan')):.4f})" for k, v in s["always_minus_none"].items()))
    noise = [k for k, ok in s.get("gain_is_significant", {}).items() if not ok]
    if noise:
        lines.append(f"[yellow]warning:[/] the always-over-never gain in {', '.join(noise)} is within 2 standard "
                     "errors of zero: requesting fresh corrections buys nothing measurable here, and the shares "
                     "below are noise")
    lat = result["latency_ms_single_thread"]
    if lat:
        lines.append("per-decision latency, one thread (median ms): " + ", ".join(
            f"{k} {v['median_ms']:.3f}" for k, v in lat.items()))
    lines.append(f"gate: {result['gate_params']['device_params']:,} device parameters")
    return "\n".join(lines)
