"""The performance chapter's tables: what the benchmarks measured (from
their committed outputs) and how fast the stored runs trained; what the
study costs is ``report.budget``'s."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from ..runs import results_for
from .budget import machine_threads
from .tables import constant_levels, method_label, method_title

# One result line of benchmarks/train_throughput.py, e.g.
# "sasrec    beauty [cpu]:     2116 sequences/s,    10.6 s/epoch (22512 training sequences, 88 batches),
#  52.1 GFLOP/s = 31.1% of peak"
_LINE = re.compile(r"^(?P<method>\S+)\s+(?P<dataset>\S+) \[(?P<profile>[^\]]+)\]:\s+(?P<rate>[\d.]+) sequences/s,\s+"
                   r"(?P<epoch>[\d.]+) s/epoch (?:\((?P<sequences>\d+) training sequences)?"
                   r".*?(?P<gflops>[\d.]+) GFLOP/s =\s*(?:>=\s*)?(?P<share>[\d.]+)% of peak")
_PEAK = re.compile(r"measured fp32 matmul peak: (?P<peak>[\d.]+) GFLOP/s(?:; bf16: (?P<bf16>[\d.]+) GFLOP/s)?")
# The script's warning when other processes shared the machine.
_LOAD = re.compile(r"WARNING: 1-minute load average (?P<load>[\d.]+) > 1")
_MACHINE = re.compile(r"^machine: (?P<machine>.+?) x\d+ \(")


def _kernel_percent(result) -> float:
    """The share of the run's process CPU time spent in the kernel (NaN
    where its provenance predates ``process_seconds``)."""
    cpu = result.provenance.get("process_seconds")
    total = sum(cpu.values()) if cpu else 0.0
    return 100 * cpu["system"] / total if total else np.nan


def stored_throughput(results) -> pd.DataFrame:
    """Per stored run: seconds per training epoch, the whole run's training
    minutes and training windows per second, as recorded while the campaign ran (``--threads 1``, often
    beside other runs on the same two cores: a floor, not a benchmark), and
    the share of its CPU time spent in the kernel where recorded (page
    faults: glibc's malloc policy, ``process.keep_freed_cpu_memory``)."""
    rows = []
    for r in results:
        epochs = max(len(r.history), 1)
        examples = r.provenance.get("examples_per_epoch")
        rows.append({"dataset": r.config.dataset, "method": method_label(r.config, with_precision=True),
                     "threads": machine_threads(r.provenance.get("machine", "")), "epochs": epochs,
                     "s / epoch": r.train_seconds / epochs, "training (min)": r.train_seconds / 60,
                     "windows / s": examples * epochs / r.train_seconds if examples and r.train_seconds else np.nan,
                     "kernel % of CPU": _kernel_percent(r)})
    if not rows:
        return pd.DataFrame({"status": ["nothing stored yet"]})
    return pd.DataFrame(rows).set_index(["dataset", "method"]).sort_index()


def _cpu_model(machine: str) -> str:
    """The CPU of a run's provenance ``machine`` ("AMD EPYC x2 (torch threads 1)" -> "AMD EPYC")."""
    return re.sub(r" x\d+.*$", "", machine or "?")


def step_seconds_by_machine(results) -> pd.DataFrame:
    """Median training seconds per optimizer step of the stored ``results``,
    per (dataset, method, user sample) and CPU model (columns), with the
    number of runs behind each median: the machines lent to the campaign
    differ from day to day, and a method's step does not cost the same on
    each. Runs whose history does not count steps are left out. Like
    ``stored_throughput``, campaign figures (one thread, often beside
    another run), not benchmarks."""
    rows = []
    for r in results:
        steps = r.history[-1].get("steps") if r.history else None
        if not steps or machine_threads(r.provenance.get("machine", "")) != 1:
            continue
        rows.append({"dataset": r.config.dataset, "method": method_label(r.config, with_precision=True),
                     "users": r.config.data.max_users or "all", "cpu": _cpu_model(r.provenance.get("machine", "")),
                     "s / step": r.train_seconds / steps})
    if not rows:
        return pd.DataFrame({"status": ["nothing stored yet"]})
    frame = pd.DataFrame(rows)
    table = frame.pivot_table(index=["dataset", "method", "users"], columns="cpu", values="s / step",
                              aggfunc=["median", "count"])
    table.columns = [f"{cpu} (s / step)" if stat == "median" else f"{cpu} (runs)" for stat, cpu in table.columns]
    return table[sorted(table.columns)]


def machine_ratio_found(table: pd.DataFrame) -> list[str]:
    """A line for "What we found": of the two CPUs with the most runs in a
    ``step_seconds_by_machine`` table, how many times as long each method's
    step took on the first (by name) as on the second, for every method
    measured on both, largest first."""
    counts = {c[: -len(" (runs)")]: table[c].sum() for c in table if c.endswith(" (runs)")}
    if len(counts) < 2:
        return ["step cost by machine: the stored runs come from one CPU only"]
    first, second = sorted(sorted(counts, key=counts.get, reverse=True)[:2])
    ratios = (table[f"{first} (s / step)"] / table[f"{second} (s / step)"]).dropna().sort_values(ascending=False)
    if ratios.empty:
        return [f"step cost by machine: no method ran on both the {first} and the {second} yet"]
    parts = ", ".join(f"{' / '.join(map(str, label[:2]))}{'' if label[2] == 'all' else f' ({label[2]} users)'} "
                      f"{ratio:.2f}x" for label, ratio in ratios.items())
    return [f"a campaign step on the {first} took, against the {second}: {parts} (median seconds per step, "
            f"one thread, most beside another run)"]


def gpu_status(results, benchmark_files) -> str:
    """Whether any committed number came from a GPU: the stored runs trained
    on a CUDA device (their provenance's ``device``) and the committed
    benchmark outputs that name a CUDA device."""
    runs = [r for r in results if str(r.provenance.get("device", "")).startswith("cuda")]
    files = [Path(p).name for p in benchmark_files if "cuda" in Path(p).read_text()]
    if not runs and not files:
        return ("No stored run and no committed benchmark output came from a GPU: every number of this book "
                "was measured on a CPU.")
    return (f"{len(runs)} stored {'run' if len(runs) == 1 else 'runs'} trained on a GPU; committed benchmark "
            f"outputs that name a CUDA device: "
            + (", ".join(files) if files else "none") + ".")


def benchmark_table(paths) -> pd.DataFrame:
    """The result lines of committed ``train_throughput.py`` outputs
    (``benchmarks/measured-*.txt``): per file and command, each method's
    sequences/s, s/epoch, useful GFLOP/s and share of the measured fp32 peak,
    and the machine's load where the script warned of one (NaN: idle), and
    the CPU the script named ("?" where the output predates that line).
    The file's first line names its date, commit and machine."""
    rows = []
    for path in sorted(Path(p) for p in paths):
        lines = path.read_text().splitlines()
        header = lines[0].lstrip("# ").strip() if lines else ""
        command, peak, bf16_peak, load, machine = "", np.nan, np.nan, np.nan, "?"
        for line in lines:
            if line.startswith("$ "):
                command = line[2:].replace("python benchmarks/train_throughput.py", "").strip()
                load = np.nan
            elif (m := _MACHINE.match(line)):
                machine = m.group("machine")
            elif (m := _LOAD.search(line)):
                load = float(m.group("load"))
            elif (m := _PEAK.search(line)):
                peak = float(m.group("peak"))
                bf16_peak = float(m.group("bf16")) if m.group("bf16") else np.nan
            elif (m := _LINE.match(line.strip())):
                rows.append({"file": path.name, "options": command, "method": m.group("method"),
                             "dataset": m.group("dataset"), "profile": m.group("profile"),
                             "sequences / s": float(m.group("rate")), "s / epoch": float(m.group("epoch")),
                             "sequences / epoch": float(m.group("sequences")) if m.group("sequences") else np.nan,
                             "GFLOP/s": float(m.group("gflops")), "% of fp32 peak": float(m.group("share")),
                             "peak GFLOP/s": peak, "bf16 peak GFLOP/s": bf16_peak, "load": load,
                             "machine": machine, "recorded": header})
    if not rows:
        return pd.DataFrame({"status": ["no benchmark output committed"]})
    return pd.DataFrame(rows)


_BF16 = re.compile(r"bf16 autocast speed-up over fp32 on the same batches: (?P<speedup>[\d.]+)x")


def _speedup_lines(paths, pattern: re.Pattern):
    """``(file name, method, match)`` for each line of committed
    ``train_throughput.py`` outputs that ``pattern`` matches, with the method
    of the result line above it (its ``[bf16]``/``[compiled]``/``[eager]``
    tag removed)."""
    for path in sorted(Path(p) for p in paths):
        method = None
        for line in path.read_text().splitlines():
            if (m := _LINE.match(line.strip())):
                method = re.sub(r"\[(bf16|compiled|eager)\]$", "", m.group("method"))
            elif method and (m := pattern.search(line)):
                yield path.name, method, m


def bf16_speedups(paths) -> pd.DataFrame:
    """Per method of committed ``train_throughput.py --autocast bf16``
    outputs: its bf16 autocast speed-up over fp32 on the same batches."""
    rows = [{"file": name, "method": method, "bf16 speed-up": float(m.group("speedup"))}
            for name, method, m in _speedup_lines(paths, _BF16)]
    return pd.DataFrame(rows) if rows else pd.DataFrame({"status": ["no bf16 measurement"]})


def latest_bf16_speedups(paths) -> dict[str, float]:
    """method -> its bf16 speed-up in the newest of the ``bf16_speedups``
    files measured where bf16 is what runs train in: a file whose measured
    bf16 matmul peak is not above its fp32 peak (a CPU without bf16 units,
    where a bf16 step is several times slower and runs fall back to fp32,
    ``studies.emkd.FALLBACK_PRECISION``) prices no bf16 run and is passed over;
    one that predates the bf16 peak line is kept."""
    table = bf16_speedups(paths)
    if "bf16 speed-up" not in table:
        return {}
    lines = benchmark_table(paths)   # has rows: the speed-up lines follow result lines
    slow = (lines["bf16 peak GFLOP/s"] <= lines["peak GFLOP/s"]).groupby(lines["file"]).any()   # NaN: False
    table = table[~table["file"].isin(slow.index[slow])]
    return {row["method"]: row["bf16 speed-up"] for _, row in table.sort_values("file").iterrows()}


_COMPILED = re.compile(r"torch.compile speed-up over eager on the same batches, both after one pass, the "
                       r"compiling one \(it took (?P<compile>[\d.]+) s\): (?P<speedup>[\d.]+)x")


def compile_speedups(paths) -> pd.DataFrame:
    """Per method of committed ``train_throughput.py --compile`` outputs: the
    ``torch.compile`` speed-up over eager on the same batches (after the
    compiling pass), the seconds that pass took, and the machine's load."""
    table = benchmark_table(paths)
    rows = []
    for name, method, m in _speedup_lines(paths, _COMPILED):
        load = table[(table["file"] == name) & (table["method"] == method)]["load"]
        rows.append({"file": name, "method": method, "compile speed-up": float(m.group("speedup")),
                     "compiling pass (s)": float(m.group("compile")),
                     "load": float(load.iloc[0]) if len(load) else np.nan})
    return pd.DataFrame(rows) if rows else pd.DataFrame({"status": ["no torch.compile measurement"]})


def ab_speedups(path, before: str, after: str) -> pd.DataFrame:
    """One ``train_throughput.py`` output whose commands alternate two
    versions of the code, told apart by ``before`` and ``after`` in their
    command lines (``benchmark_table``'s options): per method, the
    sequences/s of each run of either, and the ratio of their medians."""
    table = benchmark_table([path])
    if "options" not in table:
        return pd.DataFrame({"status": [f"no benchmark output at {path}"]})
    rows = []
    for method, runs in table.groupby("method", sort=False):
        rates = {side: runs[runs["options"].str.contains(marker, regex=False)]["sequences / s"]
                 for side, marker in (("before", before), ("after", after))}
        if rates["before"].empty or rates["after"].empty:
            continue
        rows.append({"method": method, "before (sequences / s)": ", ".join(f"{r:.0f}" for r in rates["before"]),
                     "after (sequences / s)": ", ".join(f"{r:.0f}" for r in rates["after"]),
                     "speed-up (medians)": rates["after"].median() / rates["before"].median(),
                     "load": runs["load"].max(), "file": Path(path).name})
    return pd.DataFrame(rows) if rows else pd.DataFrame({"status": [f"no {before!r} / {after!r} pairs in {path}"]})


# One summary line of benchmarks/item_cross_entropy_ab.py or ensemble_scores_ab.py:
# "emkd[fp32] beauty [cpu]: <before's label> 1.0, 2.0, <after's label> 3.0, 4.0 sequences/s; speed-up ...".
# The labels hold no digits, so each run of numbers is one version's; the
# method's precision ("[fp32]", absent from the oldest outputs) is left out.
_INTERLEAVED = re.compile(r"^(?P<method>[^\s\[]+)(?:\[\w+\])? \S+ \[[^\]]+\]: [^\d]+? "
                          r"(?P<before>[\d., ]+), [^\d]+? (?P<after>[\d., ]+) sequences/s; "
                          r"speed-up of the medians (?P<speedup>[\d.]+)x$")


def interleaved_speedups(path) -> pd.DataFrame:
    """Per method of a ``benchmarks/item_cross_entropy_ab.py`` or
    ``ensemble_scores_ab.py`` output (two versions alternated step by step in
    one process, ``train_throughput.alternated_rates``): the sequences/s of
    each measurement of either and the ratio of their medians, in
    ``ab_speedups``' columns, so ``ab_found`` reads it too."""
    path = Path(path)
    if not path.is_file():
        return pd.DataFrame({"status": [f"no benchmark output at {path}"]})
    text = path.read_text().splitlines()
    load = max((float(m.group("load")) for line in text if (m := _LOAD.search(line))), default=0.0)
    rows = [{"method": m.group("method"), "before (sequences / s)": m.group("before"),
             "after (sequences / s)": m.group("after"), "speed-up (medians)": float(m.group("speedup")),
             "load": load, "file": path.name} for line in text if (m := _INTERLEAVED.match(line))]
    return pd.DataFrame(rows) if rows else pd.DataFrame({"status": [f"no interleaved measurement in {path}"]})


def ab_found(speedups: pd.DataFrame, change: str) -> list[str]:
    """A "What we found" line for an ``ab_speedups`` table: ``change`` and
    the speed-up it brought each method."""
    if "method" not in speedups:
        return []
    loaded = speedups["load"].max() > 1
    return [f"{change}: " + ", ".join(f"{method_title(r['method'])} {r['speed-up (medians)']:.2f}x"
                                      for _, r in speedups.iterrows())
            + (f" (alternated under a load of {speedups['load'].max():.1f}; {speedups['file'].iloc[0]})"
               if loaded else f" ({speedups['file'].iloc[0]})")]


# The speed-up below which torch.compile is not worth a second training path:
# its float rounding differs from the eager runs of the book (a new run key),
# and every run start and resume pays its compiling pass.
COMPILE_WORTH = 1.2


def compile_found(compiled: pd.DataFrame) -> list[str]:
    """A line for "What we found" per ``compile_speedups`` file: each method's
    speed-up and whether any reaches ``COMPILE_WORTH``."""
    if "method" not in compiled:
        return []
    lines = []
    for file, rows in compiled.groupby("file", sort=True):
        load = rows["load"].max()
        speedups = ", ".join(f"{method_title(m)} {x:.2f}x" for m, x in zip(rows["method"], rows["compile speed-up"]))
        verdict = ("worth keeping for " + ", ".join(method_title(m) for m in rows["method"][rows["compile speed-up"]
                                                                                          >= COMPILE_WORTH])
                   if (rows["compile speed-up"] >= COMPILE_WORTH).any() else
                   f"none reaches {COMPILE_WORTH:.1f}x, so the core trains eagerly")
        lines.append(f"torch.compile against eager on the same batches: {speedups} ({file}"
                     + (f", load {load:.1f}" if pd.notna(load) else "") + f"): {verdict}")
    return lines


# One method's header and one part line of benchmarks/step_profile.py, e.g.
# "emkd beauty [cpu]: batch 256 x 15 items, ..." and "  attention (LN, QKV, SDPA, proj)   108.7    7.6"
_PROFILE_HEAD = re.compile(r"^(?P<method>\S+) (?P<dataset>\S+) \[(?P<profile>[^\]]+)\]: (?P<setup>.*)$")
_PROFILE_PART = re.compile(r"^  (?P<part>\S.*?)\s+(?P<ms>[\d.]+)\s+(?P<share>[\d.]+)$")


def step_profile_table(path) -> pd.DataFrame:
    """A committed ``step_profile.py`` output as rows (method, part, ms per
    step, % of the profiled step), parts in the script's order, the total
    and the operator lines (indented deeper) left out."""
    rows, current = [], None
    for line in Path(path).read_text().splitlines():
        if (m := _PROFILE_HEAD.match(line)):
            current = m.groupdict()
        elif line.startswith(_MEMORY_HEAD):   # --memory's block: bytes, not ms
            current = None
        elif current and (m := _PROFILE_PART.match(line)) and not m.group("part").startswith("total"):
            rows.append({"method": current["method"], "dataset": current["dataset"], "profile": current["profile"],
                         "part": m.group("part"), "ms / step": float(m.group("ms")),
                         "% of step": float(m.group("share"))})
    if not rows:
        return pd.DataFrame({"status": [f"no step profile in {Path(path).name}"]})
    return pd.DataFrame(rows)


_MEMORY_HEAD = "  saved for backward, by part"
_MEMORY_LINE = re.compile(r"^  (?P<part>\S.*?)\s+(?P<mib>[\d.]+)(?:\s+(?P<share>[\d.]+))?$")
_ALLOCATIONS_HEAD = "  operators by memory they allocate in one step"
_ALLOCATION = re.compile(r"^      (?P<op>\S.*?)\s+(?P<mib>[\d.]+)\s+(?P<calls>\d+)\s+(?P<per_call>[\d.]+)$")


def _memory_options(command: str) -> str:
    """The ``--set`` options of a command line other than the batch size,
    without their config part: ``activation_checkpointing, output_chunk=1024``."""
    options = []
    for name, value in re.findall(r"--set\s+(?:\w+?__)?(\w+)=(\S+)", command):
        if name != "batch_size":
            options.append(name if value.lower() == "true" else f"{name}={value}")
    return ", ".join(options) or "none"


def _block_matches(path, head: str, pattern: re.Pattern, last: str | None = None):
    """(context, match) for each line of ``pattern`` in the blocks that
    ``head`` opens in a ``step_profile.py --memory`` output, up to the first
    line that does not match (or the one whose first group is ``last``).
    The context names the method, profile, batch, memory options and malloc
    policy, read from the command line above the block: the ``--set``
    options other than the batch size ("none" without), and freed memory
    "kept" (the CLI's default, ``process.keep_freed_cpu_memory``) or "glibc
    default" (``--malloc-default``)."""
    current, inside, malloc, options = None, False, "kept", "none"
    for line in Path(path).read_text().splitlines():
        if line.startswith("$ "):
            malloc = "glibc default" if "--malloc-default" in line else "kept"
            options = _memory_options(line)
        elif (m := _PROFILE_HEAD.match(line)):
            batch = re.search(r"batch (\d+)", m.group("setup"))
            current = {"method": m.group("method"), "profile": m.group("profile"), "options": options,
                       "malloc": malloc, "batch": int(batch.group(1)) if batch else None}
            inside = False
        elif line.startswith(head):
            inside = current is not None
        elif inside and (m := pattern.match(line)):
            yield current, m
            inside = m.group(1) != last
        else:
            inside = False


def memory_profile_table(path) -> pd.DataFrame:
    """The ``--memory`` blocks of a ``step_profile.py`` output as rows
    (method, profile, malloc policy, batch, part, MiB, % of what the forward
    pass saves): the parts, then the saved total, the parameter/gradient/Adam
    state and the process's peak RSS (no share)."""
    rows = [{**context, "part": m.group("part"), "MiB": float(m.group("mib")),
             "% of saved": float(m.group("share")) if m.group("share") else np.nan}
            for context, m in _block_matches(path, _MEMORY_HEAD, _MEMORY_LINE, last="peak RSS of this process")]
    if not rows:
        return pd.DataFrame({"status": [f"no memory profile in {Path(path).name}"]})
    return pd.DataFrame(rows)


def memory_profiles(paths) -> pd.DataFrame | None:
    """``memory_profile_table`` of several outputs in one frame, with the
    file each row comes from; None when none holds a memory block."""
    tables = [memory_profile_table(p).assign(file=Path(p).name) for p in paths]
    tables = [t for t in tables if "part" in t]
    return pd.concat(tables, ignore_index=True) if tables else None


def memory_operators(path) -> pd.DataFrame:
    """The operator lines under each ``--memory`` block of a
    ``step_profile.py`` output: (method, profile, malloc policy, batch,
    operator, MiB it allocates in one step, calls, MiB per call)."""
    return pd.DataFrame([{**context, "operator": m.group("op"), "MiB": float(m.group("mib")),
                          "calls": int(m.group("calls")), "MiB per call": float(m.group("per_call"))}
                         for context, m in _block_matches(path, _ALLOCATIONS_HEAD, _ALLOCATION)])


# Issue 14's memory target: the paper-profile EMKD step (its batch of 256) within 4 GiB resident.
MEMORY_TARGET_GIB = 4.0


def memory_target_batch() -> int:
    """The batch the memory target is about: the EMKD paper profile's."""
    from ..profiles import profile_config
    return profile_config("paper", "beauty", "emkd").train.batch_size


def memory_by_part(memory: pd.DataFrame) -> pd.DataFrame:
    """``memory_profiles`` as MiB per part of the step (rows) and measured
    setting (columns: memory options, malloc policy, batch)."""
    return memory.pivot_table(index="part", columns=["options", "malloc", "batch"], values="MiB", sort=False)


def memory_batch_tables(at_batch: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, str] | None:
    """``memory_at_batch``'s frame for a reader, as ``(peaks, saved parts,
    caption)``: the peak RSS (GiB) at each measured batch and at its target
    batch (measured or extrapolated), the parts that save the most for
    backward, both indexed by the settings that vary between rows, and the
    peaks' caption, which names the settings every row shares once. None
    when nothing was measured."""
    if not len(at_batch):
        return None
    shown = with_method_titles(at_batch.drop(columns=[c for c in at_batch
                                                      if c.startswith("saved at") or c == "target batch"]))
    shown = shown.set_index(["method", "profile", "options", "malloc"])
    one = constant_levels(shown.index) if len(shown) > 1 else []
    shared = " ".join(str(shown.index.get_level_values(i)[0]) for i in one)
    shown = shown.droplevel(one) if one else shown
    peaks = shown[[c for c in shown if c.startswith("peak RSS at") and "target" not in c]].rename(
        columns=lambda c: c.replace("peak RSS at ", "batch ").replace(" (GiB)", ""))
    caption = f"peak resident memory of one step{', ' + shared if shared else ''} (GiB)"
    return peaks, shown[["largest saved parts"]], caption


def largest_allocations(paths) -> pd.DataFrame | None:
    """``memory_operators`` of the outputs at each memory setting's largest
    batch, freed memory kept, indexed by (options, operator); None without
    outputs."""
    if not paths:
        return None
    allocations = pd.concat([memory_operators(path) for path in paths], ignore_index=True)
    kept = allocations[allocations["malloc"] == "kept"]
    largest = kept[kept["batch"] == kept.groupby("options")["batch"].transform("max")]
    return largest.drop(columns=["method", "profile", "malloc"]).set_index(["options", "operator"])


def memory_at_batch(memory: pd.DataFrame, batch: int) -> pd.DataFrame:
    """Per (method, profile, memory options, malloc policy) of
    ``memory_profile_table``: the peak RSS and the bytes saved for backward
    at each measured batch size; the peak at ``batch``, measured, or else
    extrapolated on the line through the two largest measured batches
    (activations and transients grow with the batch; the state and the
    process's own footprint stay); and the two parts that save the most for
    backward at the largest batch."""
    rows = []
    if "part" not in memory:
        return pd.DataFrame(rows)
    memory = memory if "options" in memory else memory.assign(options="none")
    for (method, profile, options, malloc), group in memory.groupby(["method", "profile", "options", "malloc"],
                                                                    sort=False):
        value = lambda part: group[group["part"] == part].set_index("batch")["MiB"].sort_index()  # noqa: E731
        peak, saved = value("peak RSS of this process"), value("total saved for backward")
        row = {"method": method, "profile": profile, "options": options, "malloc": malloc}
        for b in peak.index:
            row[f"peak RSS at {b} (GiB)"] = peak[b] / 1024
            row[f"saved at {b} (GiB)"] = saved.get(b, np.nan) / 1024
        parts = group[(group["batch"] == peak.index.max()) & group["% of saved"].notna()
                      & (group["part"] != "total saved for backward")]
        if len(parts):
            top = parts.nlargest(2, "% of saved")
            row["largest saved parts"] = ", ".join(f"{r['part']} {r['% of saved']:.0f}%" for _, r in top.iterrows())
        if len(peak) >= 2 and batch not in peak.index:
            (b0, p0), (b1, p1) = list(peak.items())[-2:]
            row[f"peak RSS at {batch}, extrapolated (GiB)"] = (p1 + (p1 - p0) * (batch - b1) / (b1 - b0)) / 1024
        measured, extrapolated = f"peak RSS at {batch} (GiB)", f"peak RSS at {batch}, extrapolated (GiB)"
        row["target batch"] = batch   # the measured peak there where there is one
        row["peak RSS at target batch (GiB)"] = row.get(measured, row.get(extrapolated, np.nan))
        row["at target batch"] = "measured" if measured in row else "extrapolated" if extrapolated in row else ""
        rows.append(row)
    return pd.DataFrame(rows)


_PROFILED_ON = re.compile(r"^step profile on (?P<machine>.+?) x\d+ ")


def operator_share(path, operator: str) -> pd.DataFrame:
    """Per method of a ``step_profile.py --top-ops K`` output: the ms per
    step that ``operator`` (e.g. "aten::bernoulli_", dropout's random masks)
    takes in the parts where it is among the K largest, and its share of the
    profiled step: a lower bound (it may hide below the K in other parts),
    with the CPU type the profile names ("?" where it names none)."""
    rows, current, total, machine = {}, None, {}, "?"
    op_line = re.compile(r"^      (?P<op>\S.*?)\s+(?P<ms>[\d.]+)$")
    for line in Path(path).read_text().splitlines():
        if (m := _PROFILED_ON.match(line)):
            machine = m.group("machine")
        elif (m := _PROFILE_HEAD.match(line)):
            current = m.group("method")
            rows.setdefault(current, 0.0)
        elif current and (m := op_line.match(line)) and m.group("op") == operator:
            rows[current] += float(m.group("ms"))
        elif current and (m := _PROFILE_PART.match(line)) and m.group("part").startswith("total"):
            total[current] = float(m.group("ms"))
    return pd.DataFrame([{"method": k, "operator": operator, "ms / step (at least)": v,
                          "% of step (at least)": 100 * v / total[k], "file": Path(path).name, "machine": machine}
                         for k, v in rows.items() if k in total])


def _backward_nodes(path) -> dict[str, dict[str, float]]:
    """Per method of a ``step_profile.py`` output: its listed largest
    autograd nodes, name -> % of the backward pass."""
    node_line = re.compile(r"^      (?P<node>\S+)\s+(?P<ms>[\d.]+)\s+(?P<share>[\d.]+)$")
    nodes, current, inside = {}, None, False
    for line in Path(path).read_text().splitlines():
        if (m := _PROFILE_HEAD.match(line)):
            current, inside = nodes.setdefault(m.group("method"), {}), False
        elif line.startswith("  backward by autograd node"):
            inside = current is not None
        elif inside and (m := node_line.match(line)):
            current[m.group("node")] = float(m.group("share"))
        else:
            inside = False
    return nodes


def sparse_update_bound(path) -> pd.DataFrame:
    """Per method of a ``step_profile.py`` output: the most that sparse
    (row-wise) updates of the input item embeddings could save, as % of the
    profiled step. They can only shrink the optimizer part (zero_grad and
    Adam over every parameter) and the embedding's backward node
    (``EmbeddingBackward``, its dense gradient); where that node is not among
    the listed largest backward nodes, the smallest listed one bounds it.
    The output layer's gradient covers every item row whatever the input
    side does (the full softmax scores every item)."""
    table = step_profile_table(path)
    rows = []
    for method, nodes in _backward_nodes(path).items():
        parts = table[table["method"] == method].set_index("part")["% of step"] if "method" in table else {}
        optimizer = next((v for k, v in parts.items() if k.startswith("optimizer")), None)
        backward = parts.get("backward")
        if optimizer is None or backward is None or not nodes:
            continue
        listed = "EmbeddingBackward" in nodes
        embedding = backward * (nodes["EmbeddingBackward"] if listed else min(nodes.values())) / 100
        rows.append({"method": method, "optimizer % of step": optimizer,
                     "embedding backward % of step": embedding, "embedding backward listed": listed,
                     "bound % of step": optimizer + embedding})
    return pd.DataFrame(rows)


def sparse_update_sentence(bound: pd.DataFrame, file: str) -> str:
    """The verdict on sparse embedding updates from ``sparse_update_bound``."""
    if bound.empty:
        return f"{file} has no optimizer and backward-node lines to bound sparse embedding updates by."
    parts = [f"{method_title(r['method'])} {'' if r['embedding backward listed'] else 'below '}"
             f"{r['bound % of step']:.1f}%" for _, r in bound.iterrows()]
    return ("Sparse (row-wise) updates of the item embeddings could save at most the optimizer's share of a step "
            "and the embedding's backward: " + ", ".join(parts) + f" of the profiled step ({file}). "
            "The output layer's gradient covers every item row anyway, since the full softmax scores every item, "
            "so the lever is not built.")


# The side-by-side lines of benchmarks/public_pattern.py and recbole_peer.py, e.g.
# "  public code's pattern     48.8 sequences/s,   13 s/epoch, peak RSS  1.26 GiB",
# "  RecBole 1.2.1     698 target positions/s (...)", and their target lines
# "  target: library >= 5x the pattern: 8.52x (met)".
_SIDE = re.compile(r"^  (?P<who>\S.*?)\s+(?P<rate>[\d.]+) (?P<unit>sequences/s|target positions/s)"
                   r"(?:.*?peak RSS\s+(?P<rss>[\d.]+) GiB)?")
_TARGET = re.compile(r"^  target: (?P<target>.+?): (?P<measured>[\d.]+x?(?: GiB)?) \((?P<met>met|not met)\)$")
_RATIO = re.compile(r"^  (?P<what>library / .+?): (?P<ratio>[\d.]+)x$")


def comparison_tables(paths) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Committed outputs of the side-by-side benchmarks
    (``benchmarks/compared-*.txt``) as (sides, targets): per file and
    command, each side's rate (and peak RSS where printed); each target or
    ratio line with its measured figure and whether it is met."""
    sides, targets = [], []
    for path in sorted(Path(p) for p in paths):
        command = ""
        for line in path.read_text().splitlines():
            where = {"file": path.name, "benchmark": command}
            if line.startswith("$ "):
                command = line[2:].split("  #")[0].replace("python benchmarks/", "").strip()
            elif (m := _TARGET.match(line)):
                targets.append({**where, "target": m.group("target"), "measured": m.group("measured"),
                                "met": m.group("met")})
            elif (m := _RATIO.match(line)):
                targets.append({**where, "target": m.group("what") + " (no target)",
                                "measured": m.group("ratio") + "x", "met": ""})
            elif (m := _SIDE.match(line)):
                sides.append({**where, "side": m.group("who"), m.group("unit"): float(m.group("rate")),
                              "peak RSS (GiB)": float(m.group("rss")) if m.group("rss") else np.nan})
    return pd.DataFrame(sides), pd.DataFrame(targets)


# One line of benchmarks/clustering_share.py, e.g. "s4rec    beauty [cpu]:    207.4 s/epoch of
# training (86 batches, 20 timed), clustering    0.20 s/epoch =  0.10% of the epoch (Sinkhorn in every step)"
_CLUSTERING = re.compile(r"^(?P<method>\S+)\s+(?P<dataset>\S+) \[(?P<profile>[^\]]+)\]:\s+(?P<train>[\d.]+) s/epoch "
                         r"of training .*?clustering\s+(?P<clustering>[\d.]+) s/epoch =\s+(?P<share>[\d.]+)% "
                         r"of the epoch \((?P<how>.+)\)$")


EPOCH_WITH_CLUSTERING = "epoch s (clustering included)"


def clustering_table(path) -> pd.DataFrame:
    """A committed ``clustering_share.py`` output: per method, the epoch's
    training seconds, its clustering seconds, their share, how it clusters,
    and the whole epoch, clustering included. Clustering "in every step"
    (S^4Rec's Sinkhorn) runs inside the training steps, so their seconds hold
    it; clustering "once per epoch" (ICLRec's K-means) runs before them and
    adds to the epoch, as the script's share counts it."""
    rows = []
    for line in Path(path).read_text().splitlines():
        if not (m := _CLUSTERING.match(line)):
            continue
        train, clustering = float(m.group("train")), float(m.group("clustering"))
        rows.append({"method": m.group("method"), "dataset": m.group("dataset"), "profile": m.group("profile"),
                     "training s / epoch": train, "clustering s / epoch": clustering,
                     "% of the epoch": float(m.group("share")), "clustering": m.group("how"),
                     EPOCH_WITH_CLUSTERING: train + (clustering if "once per epoch" in m.group("how") else 0.0)})
    if not rows:
        return pd.DataFrame({"status": [f"no clustering line in {Path(path).name}"]})
    return pd.DataFrame(rows)



# Issue targets: useful FLOP/s as a share of the measured fp32 peak.
TARGETS = {"sasrec": 50.0, "bert4rec": 50.0, "emkd": 40.0}
# The best line's share of the highest peak on its CPU type: read by performance_found; the table shows that
# peak in its "measured in" text (a column of its own would widen the table past the page).
HIGHEST_PEAK_SHARE = "% of the CPU type's highest peak"


def target_table(benchmarks: pd.DataFrame, targets=TARGETS) -> pd.DataFrame:
    """Per method with a target: the best share of the fp32 peak any
    committed benchmark output measured (cpu profile, the library's default
    options, an otherwise idle machine: under load the matmul peak falls
    further than training throughput, which would flatter the share), the
    best with bf16 autocast (``method[bf16]`` lines; as a share of the fp32
    peak, which the target names, and of the machine's bf16 peak), each with
    the file that measured it with the CPU and its fp32 peak (a share of a
    higher peak is a smaller share of the same speed: the best share may come
    from the slower machine), the best fp32 line's speed as a share of the
    highest fp32 peak any counted line measured on the same CPU type (the
    peak varies from day to day: a low-peak day flatters the share), the
    fp32 line's training sequences per second
    (not its seconds per epoch: the files measure epochs of different
    windows), the target, and whether it is met: "yes", "with bf16 autocast" where only
    the bf16 run reaches it, else "no"."""
    rows = []
    if "method" not in benchmarks.columns:
        return pd.DataFrame({"status": ["no benchmark output committed"]})
    counted = benchmarks[(benchmarks["profile"] == "cpu") & benchmarks["load"].isna()
                         & ~benchmarks["options"].str.contains("--malloc-default", regex=False)]
    for method, target in targets.items():
        row = {"method": method, "target % of peak": target}
        fp32, bf16 = counted[counted["method"] == method], counted[counted["method"] == f"{method}[bf16]"]
        if fp32.empty:
            rows.append({**row, "measured % of peak": np.nan, "met": "not measured"})
            continue
        best = fp32.loc[fp32["% of fp32 peak"].idxmax()]
        # The peak is measured beside each line and varies from day to day on one CPU type: the same speed
        # against the highest peak measured on that type is the share a low-peak day does not flatter.
        highest = counted.loc[counted["machine"] == best["machine"], "peak GFLOP/s"].max()
        row.update({"measured % of peak": best["% of fp32 peak"],
                    HIGHEST_PEAK_SHARE: 100 * best["GFLOP/s"] / highest,
                    "sequences / s": best["sequences / s"],
                    "measured in": f"{best['file']} ("
                                   + ("" if best.get("machine", "?") == "?" else f"{best['machine']}, ")
                                   + f"fp32 peak {best['peak GFLOP/s']:.0f} GFLOP/s"
                                   + (f"; the highest on this CPU type {highest:.0f}" if highest > best["peak GFLOP/s"]
                                      else "") + ")"})
        if not bf16.empty:
            fast = bf16.loc[bf16["% of fp32 peak"].idxmax()]
            row.update({"bf16 autocast % of fp32 peak": fast["% of fp32 peak"],
                        "bf16 autocast % of bf16 peak": 100 * fast["GFLOP/s"] / fast.get("bf16 peak GFLOP/s", np.nan),
                        "bf16 measured in": fast["file"]})
        row["met"] = ("yes" if row["measured % of peak"] >= target else
                      "with bf16 autocast" if row.get("bf16 autocast % of fp32 peak", 0) >= target else "no")
        rows.append(row)
    return pd.DataFrame(rows).set_index("method")


# The summary line of ``python -m emkd_lib.data.features``, e.g.
# "ml-100k: 1682 items in 95.4 s -> /cache/features/ml-100k/36691ed1 (12.3 MiB)"
_EXTRACTED = re.compile(r"^(?P<dataset>\S+): (?P<items>\d+) items in (?P<seconds>[\d.]+) s -> \S+ "
                        r"\((?P<mib>[\d.]+) MiB\)$")


def feature_extraction_table(path) -> pd.DataFrame:
    """A committed output of the ODMT feature extractor run from an empty
    cache: per dataset, its items, the extraction seconds and the cache's size."""
    rows = [{"dataset": m.group("dataset"), "items": int(m.group("items")), "seconds": float(m.group("seconds")),
             "cache (MiB)": float(m.group("mib"))}
            for line in Path(path).read_text().splitlines() if (m := _EXTRACTED.match(line))]
    if not rows:
        return pd.DataFrame({"status": [f"no extraction line in {Path(path).name}"]})
    return pd.DataFrame(rows).set_index("dataset")


def performance_found(targets, budget, parts, dropout, bf16, compared_targets, clustering,
                      precision=None, features=None, memory=None,
                      memory_target_gib: float = MEMORY_TARGET_GIB) -> list[str]:
    """Lines for the performance chapter's "What we found", from its tables
    (``target_table``, ``budget.study_budget``, ``step_profile_table``,
    ``operator_share``, ``bf16_speedups``, ``comparison_tables``' targets,
    ``clustering_table``, ``significance_table`` of a bf16 run against fp32,
    ``feature_extraction_table``, ``memory_at_batch``); a table that says
    "status" adds nothing."""
    lines = [f"{method_title(m)}: best measured {row['measured % of peak']:.1f}% of the fp32 peak"
             + (f" ({row['bf16 autocast % of fp32 peak']:.1f}% with bf16 autocast)"
                if pd.notna(row.get("bf16 autocast % of fp32 peak", np.nan)) else "")
             + (f", {row[HIGHEST_PEAK_SHARE]:.1f}% of the highest fp32 peak measured on the same CPU type (its peak "
                f"that day was lower)"
                if row.get(HIGHEST_PEAK_SHARE, np.nan) < row["measured % of peak"] - 0.05 else "")
             + f" against a target of {row['target % of peak']:.0f}% ("
             + {"yes": "met", "no": "not met", "with bf16 autocast": "met only with bf16 autocast"}[row["met"]] + ")"
             for m, row in targets.iterrows() if row.get("met") in ("yes", "no", "with bf16 autocast")]
    total = budget.loc["total"]
    lines.append(f"{int(total['stored'])} of {int(total['runs'])} planned runs are stored; they cost "
                 f"{total['CPU-hours (new runs)']:.1f} CPU-hours against the goal of 24 for the whole book, with "
                 f"{int(total['not stored yet'])} runs still to train"
                 + (f", which at the stored runs' rates would cost about {total['estimated CPU-hours to go']:.0f} "
                    f"CPU-hours more ("
                    + (f"{total['of which by proxy']:.0f} of these CPU-hours priced by proxy, "
                       if "of which by proxy" in total
                       else "")
                    + f"{int(total['not priced'])} run{'s' * (int(total['not priced']) != 1)} not priced)"
                    if "estimated CPU-hours to go" in total else ""))
    if "part" in parts:
        for method, part in parts.groupby("method"):
            top = part.nlargest(3, "% of step")
            lines.append(f"{method_title(method)}: the largest parts of a step are "
                         + ", ".join(f"{r['part']} ({r['% of step']:.0f}%)" for _, r in top.iterrows()))
    for _, row in dropout.iterrows():
        if row["% of step (at least)"] < 0.05:   # below the largest operators of every part: nothing measured
            continue
        on = "" if row.get("machine", "?") == "?" else f" ({row['machine']})"
        lines.append(f"{method_title(row['method'])}: dropout's random masks ({row['operator']}) took at least "
                     f"{row['% of step (at least)']:.1f}% of a step in {row['file']}{on}")
    machines = sorted(set(dropout.get("machine", pd.Series(dtype=str))) - {"?"})
    if len(machines) > 1:
        lines.append(f"the dropout profiles ran on {len(machines)} CPU types ({', '.join(machines)}): their shares "
                     f"differ by machine as well as by the masks' draw, so the change's own effect on a step is "
                     f"the alternated measurement on one machine")
    if "bf16 speed-up" in bf16:
        for _, row in bf16.iterrows():
            speed = row["bf16 speed-up"]
            pace = f"{speed:.2f}x as fast as fp32" if speed >= 1 else f"slower than fp32 ({speed:.2f}x its speed)"
            lines.append(f"{method_title(row['method'])}: bf16 autocast trains {pace} on the same batches "
                         f"({row['file']})")
    if precision is not None and len(precision):
        for _, row in precision.iterrows():
            lines.append(f"{row['dataset']}: {row['reference']} test NDCG@10 {row['reference NDCG@10']:.4f} against "
                         f"{row['other']} (fp32, seed 0) {row['other NDCG@10']:.4f}, {row['change %']:+.1f}% "
                         f"(paired Wilcoxon p = {row['p (Wilcoxon)']:.3g})")
    for _, row in compared_targets.iterrows():
        lines.append(f"{row['target']}: {row['measured']}" + (f" ({row['met']})" if row["met"] else "")
                     + (f" (`{row['benchmark']}`, {row['file']})" if "file" in row else ""))
    if "method" in clustering:
        for _, row in clustering.iterrows():
            lines.append(f"{method_title(row['method'])} on {row['dataset']}: clustering ({row['clustering']}) takes "
                         f"{row['% of the epoch']:.2f}% of an epoch ({row['clustering s / epoch']:.2f} of "
                         f"{row[EPOCH_WITH_CLUSTERING]:.0f} s)")
        for dataset, rows in clustering.groupby("dataset"):
            epoch = rows.set_index("method")[EPOCH_WITH_CLUSTERING]
            if {"s4rec", "iclrec"} <= set(epoch.index):
                # the scalability argument is about the whole epoch, of which clustering is one part
                ratio = epoch["s4rec"] / epoch["iclrec"]
                lines.append(f"on {dataset} an S⁴Rec epoch takes {ratio:.2f}x ICLRec's ({epoch['s4rec']:.0f} against "
                             f"{epoch['iclrec']:.0f} s, clustering included)"
                             + (": its clustering is the cheaper, its epoch is not" if ratio > 1 else ""))
    if memory is not None and len(memory):
        batch_of = lambda column: int(re.search(r"at (\d+)", column).group(1))  # noqa: E731
        for _, row in memory.iterrows():
            measured = ", ".join(f"{row[c]:.1f} GiB at batch {batch_of(c)}" for c in memory
                                 if c.startswith("peak RSS at") and "extrapolated" not in c and "target" not in c
                                 and pd.notna(row[c]))
            options = row.get("options", "none")
            with_options = "" if options in ("none", None) or pd.isna(options) else f" with {options}"
            line = (f"{method_title(row['method'])} [{row['profile']}]{with_options}, freed memory {row['malloc']}: "
                    f"peak RSS {measured}")
            for column in (c for c in memory if "extrapolated" in c and pd.notna(row[c])):
                met = "met" if row[column] <= memory_target_gib else "not met"
                line += (f"; on the line through them {row[column]:.1f} GiB at batch {batch_of(column)} "
                         f"(target {memory_target_gib:g} GiB: {met})")
            if row.get("at target batch") == "measured":
                peak = row["peak RSS at target batch (GiB)"]
                line += (f" (measured at batch {int(row['target batch'])}; target {memory_target_gib:g} GiB: "
                         f"{'met' if peak <= memory_target_gib else 'not met'})")
            if isinstance(row.get("largest saved parts"), str):
                line += f"; of what the forward pass saves for the backward pass, {row['largest saved parts']}"
            lines.append(line)
        lines += _memory_target_found(memory, memory_target_gib)
    if features is not None and "seconds" in features:
        for dataset, row in features.iterrows():
            lines.append(f"ODMT's item features of {dataset}: {int(row['items'])} items extracted in "
                         f"{row['seconds']:.0f} s from an empty cache ({row['cache (MiB)']:.0f} MiB)")
    return lines


def _memory_target_found(memory: pd.DataFrame, target_gib: float) -> list[str]:
    """The memory lines' verdict in one line: which options (if any) bring
    the step under ``target_gib`` at the target batch, and what the step
    without options takes there; the lines above give each option's peak,
    and read one by one their "not met" hides that one of them meets it."""
    if "peak RSS at target batch (GiB)" not in memory:
        return []
    at = memory.dropna(subset=["peak RSS at target batch (GiB)"])
    if at.empty:
        return []
    batch = int(at["target batch"].iloc[0])
    peak = "peak RSS at target batch (GiB)"
    best = at.loc[at[peak].idxmin()]
    options = "" if best["options"] in ("none", None) or pd.isna(best["options"]) else best["options"]
    line = f"the {target_gib:g} GiB target at batch {batch}: "
    if best[peak] > target_gib:
        return [line + f"not met by any profiled setting (the lowest {best[peak]:.1f} GiB, "
                       f"{'with ' + options if options else 'without options'}, {best['at target batch']})"]
    if not options:
        return [line + f"met without any option ({best[peak]:.1f} GiB, {best['at target batch']})"]
    line += f"met with {options} ({best[peak]:.1f} GiB, {best['at target batch']})"
    plain = at[at["options"].isin(["none"]) | at["options"].isna()]
    if len(plain):
        low = plain.loc[plain[peak].idxmin()]
        line += f"; without options the step's lowest peak is {low[peak]:.1f} GiB ({low['at target batch']})"
    return [line]


# "python benchmarks/x.py --side ours --batches 3": a command with its options
_COMMAND = re.compile(r"python benchmarks/\S+(?: --?[\w-]+(?: (?!--)[\w.=/:-]+)?)*")


def benchmark_notes(path: Path) -> str:
    """A benchmark output's notes (its ``# `` lines) as one paragraph of
    Markdown, each ending in a full stop, the commands they quote as code
    (as prose, Markdown would set their ``--`` as dashes)."""
    notes = [line[2:].strip() for line in Path(path).read_text().splitlines() if line.startswith("# ")]
    return " ".join(_COMMAND.sub(lambda m: f"`{m.group(0)}`", note).rstrip(".") + "." for note in notes)


def by_method(table: pd.DataFrame) -> pd.DataFrame:
    """A per-method benchmark table for a reader: indexed by the method's
    title, without the column naming the output file (the text above the
    table names it)."""
    return with_method_titles(table).set_index("method").drop(columns=["file"], errors="ignore")


def operator_shares(path, operators) -> pd.DataFrame:
    """``operator_share`` of each of ``operators``, one below the other."""
    return pd.concat([operator_share(path, op) for op in operators])


def with_method_titles(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with its "method" column or index level read through
    ``method_title`` (the parsers keep the ids, which other functions key on)."""
    table = table.copy()
    if "method" in table.columns:
        table["method"] = table["method"].map(method_title)
    names = list(table.index.names)
    if "method" in names:
        if isinstance(table.index, pd.MultiIndex):
            table.index = pd.MultiIndex.from_tuples(
                [tuple(method_title(v) if n == "method" else v for v, n in zip(key, names)) for key in table.index],
                names=names)
        else:
            table.index = pd.Index([method_title(v) for v in table.index], name="method")
    return table



# The precision check's rows: (row label, grid, the grid's arguments, which of its runs belong to the row).
PRECISION_ROWS = (
    ("SASRec (bf16)", "precision", {}, lambda key: key[1:3] == ("sasrec", "bf16")),
    ("SASRec", "baselines", {"datasets": ["beauty"], "methods": ["sasrec"], "seeds": [0, 1, 2]}, lambda key: True),
    ("EMKD (bf16)", "emkd-spread", {"datasets": ["beauty"]}, lambda key: key[1] == "emkd"),
    ("EMKD", "precision", {}, lambda key: key[1:3] == ("emkd", "fp32")),
)
# Each bf16 row and the fp32 row it is paired with.
PRECISION_PAIRS = (("SASRec (bf16)", "SASRec"), ("EMKD (bf16)", "EMKD"))


def precision_runs(profile: str) -> dict:
    """``{row: {seed: result or None}}`` of the precision check (chapter 10):
    SASRec and EMKD on Beauty under bf16 beside their fp32 runs, looked up in
    the store (``PRECISION_ROWS``), never trained."""
    from ..studies import GRIDS
    return {row: {key[-1]: r for key, r in results_for(GRIDS[grid](profile, **kwargs)).items() if belongs(key)}
            for row, grid, kwargs, belongs in PRECISION_ROWS}


def precision_significance(by_precision: dict, seed: int = 0) -> pd.DataFrame:
    """Each bf16 row against its fp32 row at ``seed``, paired over the test
    users (``significance_table`` with the precision shown); pairs with a
    side not stored are left out (an empty table when none is complete)."""
    from .tables import significance_table
    tables = [significance_table([by_precision[name][seed] for name in pair
                                  if by_precision[name].get(seed) is not None],
                                 reference=pair[0], with_precision=True)
              for pair in PRECISION_PAIRS]
    return pd.concat(tables, ignore_index=True)


def benchmark_source(path) -> str:
    """The sentence that says where a table of chapter 10 comes from: "From
    `benchmarks/<file>`: <the file's first line>." (its header names the
    command, the commit and the machine)."""
    path = Path(path)
    return f"From `benchmarks/{path.name}`: {path.read_text().splitlines()[0].lstrip('# ')}."


def stored_runs(grid_names, profile: str) -> list:
    """Every stored result of the named grids (``studies.GRIDS``) under
    ``profile``, as the campaign trains them (``studies.campaign_grid``: a
    run's fp32 twin where it has one), each once (a run in two grids is one
    run), in the grids' order."""
    from ..studies import campaign_grid
    return list({r.key: r for name in grid_names
                 for r in results_for(campaign_grid(name, profile)).values() if r is not None}.values())
