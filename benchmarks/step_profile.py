"""Where the time of a training step goes, part by part.

For each method (default: one EMKD step and one SASRec step, the cpu
profile, Beauty) it runs a few training steps after a warm-up under
``torch.profiler`` and prints the mean milliseconds per step and the share
of each part:

    batch (pad, to device), masking (EMKD's views / BERT4Rec's cloze),
    embedding and gather, attention, feed-forward, output logits at the
    scored positions, item cross entropy, KD softmaxes, AP, contrastive
    terms (ICL + CCL), other forward, backward, gradient clipping,
    optimizer (zero_grad + fused Adam)

then the backward pass split by autograd node (the largest ones).

How the parts are found without touching ``emkd_lib``: while profiling,
this script labels ranges with ``torch.profiler.record_function``, from
the outside only:

- module hooks: a transformer block's range from its ``ln_attn`` to its
  ``ln_ffn`` is attention (LayerNorm, QKV, scaled dot-product attention,
  output projection, dropout, residual), from ``ln_ffn`` to the block's end
  feed-forward; every ``nn.Embedding`` is embedding;
- wrappers on the model's own methods (``logits``, ``attribute_logits``,
  the ensemble's ``embed``) and, for the duration of the profile, on the
  loss functions the methods call through their modules (``losses.*``,
  ``cloze_mask``, ``F.cross_entropy``);
- forward operators outside any of those ranges are sorted by name: index,
  gather, nonzero, masked_select and embedding go to "embedding and
  gather" (the hidden states at the masked positions, the attribute
  targets), the rest (final LayerNorm, dropout, the views' concatenation,
  the flattening for ICL/CCL) to "other forward".

Each operator's *self* time goes to the innermost labelled range around
it, and a range's own self time (Python between its operators) to that
range's part, so the parts add up to the profiled step. The profiler adds
overhead: the unprofiled ms/step of the same batches is printed beside it.
The step is ``train.train_one_epoch``'s body (loss, zero_grad, backward,
clip, Adam), written out here so that its phases can be labelled.

    python benchmarks/step_profile.py                       # EMKD and SASRec, cpu profile, Beauty
    python benchmarks/step_profile.py --methods emkd --steps 10 --top-ops 3
    python benchmarks/step_profile.py --profile smoke --max-batches 2   # a seconds-long check
    python benchmarks/step_profile.py --profile paper --methods emkd --memory --set train__batch_size=64

With ``--memory`` one more step, on the epoch's heaviest batch, counts, through autograd's saved-tensor
hooks, the bytes each part saves for the backward pass (held at the end of
the forward pass), and the script prints them with the parameter,
gradient and Adam state and the process's peak RSS, then one step under
the profiler's memory view lists the operators that allocate the most:
where a step's memory goes.

On CUDA the times are host-side with a synchronisation after every phase;
the per-part split of the forward pass is then launch time, not kernel time.
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import re
import time
from collections import defaultdict

import numpy as np
import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile, record_function

from emkd_lib import losses
from emkd_lib.batching import length_bucketed_batches, pad_left
from emkd_lib.methods import baselines, build_method, method_name, parse_method
from emkd_lib.methods import emkd as emkd_method
from emkd_lib.profiles import profile_config
from emkd_lib.runs import run_data

# Reused from the throughput benchmark: the process options and start, overrides, the machine's note.
try:
    from train_throughput import add_process_arguments, load_note, parse_override, start_process
except ImportError:  # imported as benchmarks.step_profile
    from benchmarks.train_throughput import add_process_arguments, load_note, parse_override, start_process
from emkd_lib.store import machine_name

PARTS = {
    "batch": "batch (pad, to device)",
    "masking": "masking (views / cloze)",
    "embedding": "embedding and gather",
    "attention": "attention (LN, QKV, SDPA, proj)",
    "ffn": "feed-forward (LN, FFN, GELU)",
    "encoder": "encoder (GRU / convolutions)",
    "logits": "output logits (scored positions)",
    "ce": "item cross entropy",
    "kd": "KD softmaxes (mutual KL)",
    "item_losses": "logits + item CE + KD (chunked)",
    "ap": "AP (attribute logits + BCE)",
    "contrastive": "contrastive (ICL + CCL)",
    "forward_other": "other forward (final LN, glue)",
    "backward": "backward",
    "clip": "gradient clipping",
    "optimizer": "optimizer (zero_grad + Adam)",
    "other": "other (between phases)",
}
PREFIX = "part::"
GATHER_OPS = ("aten::index", "aten::index_select", "aten::masked_select", "aten::nonzero", "aten::gather",
              "aten::embedding", "aten::take", "aten::masked_fill")


# ---- labelling from the outside ------------------------------------------------------

class PartStack:
    """The labelled parts open now, innermost last: the profiler sees them
    as ranges, the memory count (``saved_for_backward``) reads them here."""

    def __init__(self):
        self.parts: list[str] = []

    @contextlib.contextmanager
    def part(self, part: str):
        self.parts.append(part)
        try:
            with record_function(PREFIX + part):
                yield
        finally:
            self.parts.pop()


def _labelled(stack: PartStack, part: str, fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with stack.part(part):
            return fn(*args, **kwargs)
    return wrapper


class _Range:
    """A labelled range opened in one hook and closed in another."""

    def __init__(self, stack: PartStack):
        self.stack = stack
        self.open: list = []

    def enter(self, part: str) -> None:
        r = self.stack.part(part)
        r.__enter__()
        self.open.append(r)

    def exit(self) -> None:
        if self.open:
            self.open.pop().__exit__(None, None, None)

    def switch(self, part: str) -> None:
        """Close the open range and open ``part`` (returns None: a pre-hook's value would replace the inputs)."""
        self.exit()
        self.enter(part)


@contextlib.contextmanager
def labelled_parts(model: nn.Module, stack: PartStack):
    """Label the parts of ``model``'s training step on ``stack`` (and for the
    profiler); everything is undone on exit."""
    handles, patched, wrapped = [], [], []

    def patch(owner, name, part):
        patched.append((owner, name, getattr(owner, name)))
        setattr(owner, name, _labelled(stack, part, getattr(owner, name)))

    for owner, name, part in ((emkd_method, "cloze_mask", "masking"), (baselines, "cloze_mask", "masking"),
                              (losses, "masked_item_prediction_loss", "ce"), (losses, "distillation_loss", "kd"),
                              (losses, "chunked_item_losses", "item_losses"),
                              (losses, "attribute_prediction_loss", "ap"),
                              (losses, "intra_network_contrastive_loss", "contrastive"),
                              (losses, "cross_network_contrastive_loss", "contrastive"),
                              (torch.nn.functional, "cross_entropy", "ce")):
        patch(owner, name, part)
    for name, part in (("logits", "logits"), ("output_parts", "logits"), ("attribute_logits", "ap"),
                       ("embed", "embedding")):
        if hasattr(model, name):
            object.__setattr__(model, name, _labelled(stack, part, getattr(model, name)))
            wrapped.append(name)

    def enclose(module, part):
        rng = _Range(stack)
        handles.append(module.register_forward_pre_hook(lambda m, a: rng.enter(part)))
        handles.append(module.register_forward_hook(lambda m, a, o: rng.exit()))

    for module in model.modules():
        if hasattr(module, "ln_attn") and hasattr(module, "ln_ffn"):  # a transformer block
            rng = _Range(stack)
            handles.append(module.ln_attn.register_forward_pre_hook(lambda m, a, rng=rng: rng.enter("attention")))
            handles.append(module.ln_ffn.register_forward_pre_hook(lambda m, a, rng=rng: rng.switch("ffn")))
            handles.append(module.register_forward_hook(lambda m, a, o, rng=rng: rng.exit()))
        elif isinstance(module, nn.Embedding):
            enclose(module, "embedding")
        elif isinstance(module, (nn.GRU, nn.Conv1d)):
            enclose(module, "encoder")
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
        for owner, name, original in reversed(patched):
            setattr(owner, name, original)
        for name in wrapped:
            object.__delattr__(model, name)


# ---- the step ----------------------------------------------------------------------------

def train_step(model, recipe, batch, optimizer, train, generator, device, stack: PartStack | None = None,
               saved: contextlib.AbstractContextManager | None = None) -> None:
    """``train.train_one_epoch``'s body for one batch, its phases labelled;
    ``saved`` (``saved_for_backward``'s hooks) wraps the forward pass."""
    stack = stack or PartStack()

    def phase(part):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return stack.part(part)

    with phase("batch"):
        ids = torch.from_numpy(pad_left(batch)).to(device)
    with phase("forward_other"), (saved or contextlib.nullcontext()):
        terms = recipe.loss(model, ids, generator)
    with phase("optimizer"):
        optimizer.zero_grad(set_to_none=True)
    with phase("backward"):
        terms["loss"].backward()
    if train.grad_clip:
        with phase("clip"):
            nn.utils.clip_grad_norm_(model.parameters(), train.grad_clip)
    with phase("optimizer"):
        optimizer.step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---- attribution -----------------------------------------------------------------------------

def _part_of(event):
    """(part, outermost operator below that part's range) of a profiler event."""
    outer, node = None, event
    while node is not None:
        if node.name.startswith(PREFIX):
            return node.name[len(PREFIX):], outer
        if node.name != "step":
            outer = node
        else:
            return "other", outer
        node = node.cpu_parent
    return None, outer


def attribute(events, n_steps: int, top_ops: int = 0):
    """ms per step of every part, the backward by autograd node, and the top operators per part."""
    parts = defaultdict(float)
    nodes = defaultdict(float)
    ops = defaultdict(lambda: defaultdict(float))
    for event in events:
        if event.device_type != torch.autograd.DeviceType.CPU:
            continue
        part, outer = _part_of(event)
        if part is None:
            continue
        if part == "forward_other" and outer is not None and outer.name in GATHER_OPS:
            part = "embedding"
        ms = event.self_cpu_time_total / 1000 / n_steps
        parts[part] += ms
        if top_ops:
            own = event.name.startswith(PREFIX) or event.name == "step"
            ops[part]["(Python between operators)" if own else event.name] += ms
        if part == "backward" and event.name.startswith("autograd::engine::evaluate_function: "):
            parent = event.cpu_parent
            if parent is not None and parent.name == PREFIX + "backward":  # top-level nodes only
                name = re.sub(r"\d+$", "", event.name.split(": ", 1)[1])
                nodes[name] += event.cpu_time_total / 1000 / n_steps
    return dict(parts), dict(nodes), {p: dict(o) for p, o in ops.items()}


# ---- memory ----------------------------------------------------------------------------------

class SavedForBackward:
    """Bytes autograd saves for the backward pass during one forward pass,
    by the part that saved them: what is held at the end of the forward
    pass, the bulk of a training step's peak memory. A storage saved twice
    (or viewed by several saved tensors) counts once, in the first part."""

    def __init__(self, stack: PartStack):
        self.stack, self.bytes, self.seen = stack, defaultdict(int), set()

    def pack(self, tensor: torch.Tensor):
        storage = tensor.untyped_storage()
        ptr = storage.data_ptr()
        if ptr not in self.seen and tensor.device.type != "meta":
            self.seen.add(ptr)
            self.bytes[self.stack.parts[-1] if self.stack.parts else "other"] += storage.nbytes()
        return tensor

    def hooks(self):
        return torch.autograd.graph.saved_tensors_hooks(self.pack, lambda tensor: tensor)


def largest_allocations(events) -> dict[str, tuple[int, int]]:
    """Operator -> (bytes it allocates itself, calls) over a
    ``profile_memory`` profile, largest first: a step's big transients
    (the scores over the catalogue and what the losses derive from them)
    show as many calls of one size."""
    totals: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for event in events:
        allocated = event.self_cpu_memory_usage
        if allocated > 0 and not event.name.startswith(PREFIX):
            totals[event.name][0] += allocated
            totals[event.name][1] += 1
    return {op: (b, n) for op, (b, n) in sorted(totals.items(), key=lambda kv: -kv[1][0])}


def state_bytes(model: nn.Module, optimizer) -> dict[str, int]:
    """Parameters, their gradients and Adam's two moments, in bytes."""
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    moments = sum(t.numel() * t.element_size() for state in optimizer.state.values()
                  for t in state.values() if torch.is_tensor(t) and t.dim() > 0)
    return {"parameters": params, "gradients": params, "Adam moments": moments}


def peak_rss_bytes() -> int:
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024   # Linux: KiB


def print_memory(saved: SavedForBackward, state: dict[str, int], rss_before: int) -> None:
    mib = 2 ** 20
    total = sum(saved.bytes.values()) or 1
    print(f"  saved for backward, by part (one step of the heaviest batch)    {'MiB':>9s} {'%':>6s}")
    for part, label in PARTS.items():
        if saved.bytes.get(part, 0) >= mib / 100:
            print(f"  {label:40s} {saved.bytes[part] / mib:9.1f} {100 * saved.bytes[part] / total:6.1f}")
    print(f"  {'total saved for backward':40s} {total / mib:9.1f} {100.0:6.1f}")
    for name, size in state.items():
        print(f"  {name:40s} {size / mib:9.1f}")
    print(f"  {'peak RSS before the first step':40s} {rss_before / mib:9.1f}")
    print(f"  {'peak RSS of this process':40s} {peak_rss_bytes() / mib:9.1f}")


# ---- one method --------------------------------------------------------------------------------

def profile_method(name: str, args, device: torch.device, overrides: dict) -> dict:
    method, encoder = parse_method(name)
    config = profile_config(args.profile, args.dataset, method, encoder=encoder, **overrides)
    dataset, split = run_data(config)
    torch.manual_seed(0)
    model, recipe = build_method(config, dataset)
    model.to(device).train()
    train = config.train
    optimizer = torch.optim.Adam(model.parameters(), lr=train.lr, weight_decay=train.weight_decay,
                                 fused=device.type in ("cpu", "cuda"))
    generator = torch.Generator(device=device).manual_seed(0)
    examples = recipe.make_examples(split.train)
    lengths = np.array([len(e) for e in examples])
    batches = length_bucketed_batches(lengths, train.batch_size, shuffle=True, rng=np.random.default_rng(0))
    warmup, steps = args.warmup, args.steps
    if args.max_batches:
        warmup = min(warmup, max(args.max_batches - 1, 0))
        steps = max(min(steps, args.max_batches - warmup), 1)
    # the memory steps take the epoch's heaviest batch (most items): its peak is the epoch's
    heaviest = [examples[i] for i in max(batches, key=lambda idx: int(lengths[idx].sum()))]
    # Batches are bucketed by length, so a few consecutive ones can be much shorter or longer
    # than the epoch's mean: the timed steps take the batches at evenly spaced quantiles of
    # batch length (timed unprofiled, then the same batches profiled); the warm-up, the first of the rest.
    by_length = sorted(range(len(batches)), key=lambda b: (lengths[batches[b]].mean(), b))
    timed_ids = [by_length[int((k + 0.5) * len(batches) / steps)] for k in range(steps)]
    warmup_ids = [b for b in range(len(batches)) if b not in timed_ids][:warmup]

    def as_examples(ids):
        return [[examples[i] for i in batches[b]] for b in ids]

    timed = as_examples(timed_ids)

    rss_before = peak_rss_bytes()   # torch, the data, the model and the batches
    for batch in as_examples(warmup_ids):
        train_step(model, recipe, batch, optimizer, train, generator, device)
    t0 = time.perf_counter()
    for batch in timed:
        train_step(model, recipe, batch, optimizer, train, generator, device)
    wall_ms = (time.perf_counter() - t0) * 1000 / steps

    stack = PartStack()
    with labelled_parts(model, stack), profile(activities=[ProfilerActivity.CPU]) as prof:
        for batch in timed:
            with record_function("step"):
                train_step(model, recipe, batch, optimizer, train, generator, device, stack)
    parts, nodes, ops = attribute(prof.events(), steps, args.top_ops)
    saved = allocations = None
    if args.memory:   # one more step counting what its forward pass saves, one what each operator allocates
        saved = SavedForBackward(stack)
        with labelled_parts(model, stack):
            train_step(model, recipe, heaviest, optimizer, train, generator, device, stack, saved.hooks())
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as memory_prof:
            train_step(model, recipe, heaviest, optimizer, train, generator, device)
        allocations = largest_allocations(memory_prof.events())

    shape = f"batch {train.batch_size} x {int(lengths.max())} items, d={config.encoder_config.hidden}"
    if method == "emkd":
        shape += f", N={config.params.n_networks} networks, M={config.params.n_views} views"
    timed_items = np.mean([len(e) for batch in timed for e in batch])
    print(f"\n{method_name(config.method, config.encoder)} {args.dataset} [{args.profile}]: {shape}; "
          f"mean of {steps} step(s) after {warmup} warm-up step(s); {timed_items:.1f} items per sequence "
          f"in the timed batches, {lengths.mean():.1f} in the epoch")
    total = sum(parts.values())
    print(f"  {'part':34s} {'ms/step':>9s} {'%':>6s}")
    for part, label in PARTS.items():
        if part in parts and parts[part] >= 0.0005:
            print(f"  {label:34s} {parts[part]:9.1f} {100 * parts[part] / total:6.1f}")
            for op, ms in sorted(ops.get(part, {}).items(), key=lambda kv: -kv[1])[:args.top_ops]:
                print(f"      {op[:40]:40s} {ms:9.1f}")
    print(f"  {'total (profiled)':34s} {total:9.1f} {100.0:6.1f}")
    print(f"  {'wall, same batches unprofiled':34s} {wall_ms:9.1f}")
    if nodes:
        backward = parts.get("backward", 0.0) or 1.0
        print(f"  backward by autograd node (largest {args.nodes}; % of backward):")
        for node, ms in sorted(nodes.items(), key=lambda kv: -kv[1])[:args.nodes]:
            print(f"      {node[:40]:40s} {ms:9.1f} {100 * ms / backward:6.1f}")
    if saved is not None:
        print_memory(saved, state_bytes(model, optimizer), rss_before)
        print(f"  operators by memory they allocate in one step (largest {args.nodes}; MiB in all, calls, MiB per call):")
        for op, (total_bytes, calls) in list(allocations.items())[:args.nodes]:
            print(f"      {op[:40]:40s} {total_bytes / 2**20:9.1f} {calls:6d} {total_bytes / 2**20 / calls:9.1f}")
    return {"method": method_name(config.method, config.encoder), "parts_ms": parts, "backward_nodes_ms": nodes,
            "total_ms": total, "wall_ms": wall_ms, "saved_bytes": dict(saved.bytes) if saved else None}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="beauty")
    parser.add_argument("--profile", default="cpu", choices=("smoke", "cpu", "paper"))
    parser.add_argument("--methods", nargs="+", default=["emkd", "sasrec"],
                        help="method names, or METHOD-ENCODER (emkd-sasrec)")
    parser.add_argument("--warmup", type=int, default=3, help="warm-up steps")
    parser.add_argument("--steps", type=int, default=5, help="steps averaged (timed unprofiled, then profiled)")
    parser.add_argument("--max-batches", type=int, default=None,
                        help="at most this many warm-up + averaged steps (a quick check)")
    parser.add_argument("--top-ops", type=int, default=0, help="list the largest operators of every part")
    parser.add_argument("--nodes", type=int, default=8, help="autograd nodes listed under the backward")
    parser.add_argument("--set", dest="overrides", action="append", type=parse_override, default=[],
                        metavar="KEY=VALUE", help="config override keyed like RunConfig.replace, repeatable")
    parser.add_argument("--memory", action="store_true",
                        help="also count the bytes saved for backward by part, the state and the peak RSS")
    add_process_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> list[dict]:
    args = build_parser().parse_args(argv)
    device = start_process(args)
    note = load_note()
    if note:
        print(note)
    print(f"step profile on {machine_name(device)}; torch {torch.__version__}; threads {torch.get_num_threads()}")
    return [profile_method(name, args, device, dict(args.overrides)) for name in args.methods]


if __name__ == "__main__":
    main()
