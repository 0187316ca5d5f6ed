"""EMKD's training step against the computation pattern of the public code.

The public EMKD code (github.com/hw-du/EMKD, ``trainers/bert.py``) trains the
same kind of model in another pattern:

- a Python loop over the N networks, and inside it a loop over the M masked
  views: N x (M + 1) forward passes of B sequences each;
- logits over every position and the whole catalogue, ``(B, T, |V|)`` per
  network and view, the cross entropy then ignoring the unmasked positions;
- the KD softmaxes on those full logit tensors;
- attribute prediction as a dense BCE over every position's logits.

This script re-implements that pattern (``public_pattern_loss``) on the
library's own networks (``LoopEnsemble.same_architecture``: N one-network
``EnsembleBERT4Rec`` with EMKD's linear output layer, the same weights as the
batched model) and times it against the library's step (``emkd_loss``: one
batched forward of originals and views through the stacked ensemble, logits
at the masked positions only, fused KD) on the same batches of Beauty, each
side in its own process, so that each one's peak resident memory is its own.

It prints both in training sequences per second, the ratio, and both peak
RSS, beside the issue's targets (library at least 5x the pattern; library's
peak RSS at most 4 GiB):

    python benchmarks/public_pattern.py                       # paper profile, 5 batches
    python benchmarks/public_pattern.py --batch-size 64       # the pattern at 256 needs > 13 GiB
    python benchmarks/public_pattern.py --profile smoke --batches 2   # a seconds-long check

``--set train__precision=bf16`` runs the library's step as a bf16 run trains
(the run's recipe under ``train.with_precision``: the loss's forward under
bf16 autocast, fp32 weights); the public code's pattern stays fp32, as the
public code trains.

Not a copy of the public code: its model differs in ways the chapter lists
(output layer, masking, KD); what is compared is the computation pattern on
one and the same model, so the ratio is the cost of the pattern.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_throughput import LoopEnsemble, load_note, parse_override, prepared  # noqa: E402

from emkd_lib import losses  # noqa: E402
from emkd_lib.batching import pad_left  # noqa: E402
from emkd_lib.methods.baselines import cloze_mask  # noqa: E402
from emkd_lib.methods.emkd import combine_emkd_terms  # noqa: E402
from emkd_lib.process import configure_process  # noqa: E402
from emkd_lib.profiles import profile_config  # noqa: E402
from emkd_lib.store import machine_name  # noqa: E402
from emkd_lib.train import resolve_device, with_precision  # noqa: E402

TARGET_RATIO, TARGET_RSS_GIB = 5.0, 4.0


def public_pattern_loss(loop: LoopEnsemble, ids: torch.Tensor, generator, params) -> dict[str, torch.Tensor]:
    """EMKD's terms, computed network by network and view by view, with full
    ``(B, T, |V|)`` logits: the public code's pattern (see the module docstring).
    Terms are weighted as in ``emkd_loss`` (Eq. 19)."""
    B, T = ids.shape
    M = params.n_views
    views, chosen = zip(*(cloze_mask(ids, params.mask_prob, loop.mask_token, loop.n_items, generator,
                                     force_one=params.force_a_masked_position) for _ in range(M)))
    labels = [torch.where(c, ids - 1, torch.full_like(ids, -100)) for c in chosen]
    real = (ids > 0)[..., None]
    mip, ap, full_logits, h_orig, h_views = 0.0, 0.0, [], [], []
    for net in loop.networks:
        hidden = net(ids)[0]                                                 # (B, T, d)
        h_orig.append((hidden * real).flatten(1))
        if loop.item_attributes is not None and params.ap:
            attribute_logits = net.attribute_logits(hidden[None])[0]        # every position
            targets = loop.item_attributes[ids].to(hidden.dtype) * real
            ap = ap + F.binary_cross_entropy_with_logits(attribute_logits, targets)
        per_view_logits, per_view_hidden = [], []
        for view, label in zip(views, labels):
            h = net(view)[0]
            logits = net.logits(h[None])[0]                                  # (B, T, |V|): every position
            mip = mip + F.cross_entropy(logits.reshape(B * T, -1), label.reshape(-1), ignore_index=-100)
            per_view_logits.append(logits)
            per_view_hidden.append((h * real).flatten(1))
        full_logits.append(per_view_logits)
        h_views.append(torch.stack(per_view_hidden))
    terms = {"mip": mip}
    if params.ap and loop.item_attributes is not None:
        terms["ap"] = ap
    h_orig, h_views = torch.stack(h_orig), torch.stack(h_views)             # (N, B, T d), (N, M, B, T d)
    variant = dict(positives_in_one_logsumexp=params.positives_in_one_logsumexp,
                   denominator=params.contrastive_denominator)
    if params.icl:
        terms["icl"] = losses.intra_network_contrastive_loss(h_orig, h_views, params.tau, **variant)
    if params.ccl:
        terms["ccl"] = losses.cross_network_contrastive_loss(h_orig, h_views, params.tau, **variant)
    if params.kd:
        t = params.softmax_temperature
        kd = 0.0
        for m, c in enumerate(chosen):
            log_q = [F.log_softmax(full_logits[n][m] / t, -1) for n in range(len(loop.networks))]
            for x in range(len(log_q)):
                for y in range(len(log_q)):
                    if x != y:   # KL(q^y || q^x) at every position, the masked ones kept
                        kl = (log_q[y].exp() * (log_q[y] - log_q[x])).sum(-1)
                        kd = kd + (kl * c).sum() / c.sum().clamp(min=1)
        terms["kd"] = kd
    return {"loss": combine_emkd_terms(terms, params), **terms}


def _batches(config, batch_size: int, n_batches: int):
    """The model, the first ``n_batches + 1`` padded batches (the first warms
    up) and the number of training examples, at ``batch_size``."""
    _, _, model, recipe, examples, order = prepared(config.replace(train__batch_size=batch_size))
    batches = [torch.as_tensor(pad_left([examples[i] for i in idx], config.data.max_len))
               for idx in order[:n_batches + 1]]
    return model, recipe, batches, len(examples)


def measure(side: str, args) -> dict:
    """One side's seconds over ``args.batches`` timed steps (after one warm-up
    step) and the process's peak RSS."""
    configure_process(args.threads, keep_freed_memory=True)
    device = resolve_device(args.device)
    config = profile_config(args.profile, args.dataset, "emkd", **dict(args.overrides))
    config = config.replace(train__batch_size=args.batch_size or config.train.batch_size)
    model, recipe, batches, n_examples = _batches(config, config.train.batch_size, args.batches)
    params = config.params
    if side == "public":
        model = LoopEnsemble.same_architecture(model)

        def loss(ids, gen):
            return public_pattern_loss(model, ids, gen, params)
    else:   # the run's own loss (emkd_loss), at the run's precision
        run_loss = with_precision(recipe, config.train.precision, device).loss

        def loss(ids, gen):
            return run_loss(model, ids, gen)
    model.to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=config.train.lr, fused=device.type in ("cpu", "cuda"))
    generator = torch.Generator(device=device).manual_seed(0)
    seconds, sequences = 0.0, 0
    for i, ids in enumerate(batches):
        ids = ids.to(device)
        t0 = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss(ids, generator)["loss"].backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i:                                                   # step 0 warms up
            seconds += time.perf_counter() - t0
            sequences += ids.shape[0]
    rss_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20
    return {"side": side, "seconds": seconds, "sequences": sequences, "sequences_per_s": sequences / seconds,
            "peak_rss_gib": rss_gib, "batch_size": config.train.batch_size, "n_examples": n_examples,
            "precision": config.train.precision if side == "ours" else "fp32",
            "setup": f"d={config.encoder_config.hidden}, N={params.n_networks}, M={params.n_views}, "
                     f"T={config.data.max_len}, batch {config.train.batch_size}"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="beauty")
    parser.add_argument("--profile", default="paper", choices=("smoke", "cpu", "paper"))
    parser.add_argument("--batches", type=int, default=5, help="timed steps per side (after one warm-up step)")
    parser.add_argument("--batch-size", type=int, default=None, help="default: the profile's")
    parser.add_argument("--set", dest="overrides", action="append", type=parse_override, default=[],
                        metavar="KEY=VALUE", help="config override keyed like RunConfig.replace, repeatable")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--side", choices=("ours", "public"), default=None,
                        help="measure one side in this process and print it as JSON (what the parent runs)")
    return parser


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    if args.side:
        result = measure(args.side, args)
        print(json.dumps(result))
        return result
    forwarded = list(argv if argv is not None else sys.argv[1:])
    configure_process(args.threads, keep_freed_memory=True)   # the header names the children's threads
    note = load_note()
    if note:
        print(note)
    print(f"EMKD step against the public code's pattern on {machine_name(resolve_device(args.device))}; "
          f"torch {torch.__version__}")
    results = {}
    for side in ("ours", "public"):
        done = subprocess.run([sys.executable, __file__, *forwarded, "--side", side], capture_output=True, text=True)
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no message"])[-1]
            print(f"{side}: failed (exit {done.returncode}): {last}")
            raise SystemExit(1)
        results[side] = json.loads(done.stdout.strip().splitlines()[-1])
    ours, public = results["ours"], results["public"]
    print(f"{args.dataset} [{args.profile}] {ours['setup']}; {ours['sequences']} sequences timed per side")
    library = "library (batched, masked logits)" + (f", {ours['precision']}" if ours["precision"] != "fp32" else "")
    for label, r in ((library, ours), ("public code's pattern", public)):
        print(f"  {label:34s} {r['sequences_per_s']:8.1f} sequences/s, "
              f"{r['n_examples'] / r['sequences_per_s']:8.0f} s/epoch, peak RSS {r['peak_rss_gib']:5.2f} GiB")
    ratio = ours["sequences_per_s"] / public["sequences_per_s"]
    print(f"  target: library >= {TARGET_RATIO:.0f}x the pattern: {ratio:.2f}x "
          f"({'met' if ratio >= TARGET_RATIO else 'not met'})")
    profile_batch = profile_config(args.profile, args.dataset, "emkd").train.batch_size
    if ours["batch_size"] == profile_batch:
        print(f"  target: library peak RSS <= {TARGET_RSS_GIB:.0f} GiB: {ours['peak_rss_gib']:.2f} GiB "
              f"({'met' if ours['peak_rss_gib'] <= TARGET_RSS_GIB else 'not met'})")
    else:   # the memory target is the profile's batch's; a smaller batch does not answer it
        print(f"  (peak RSS at batch {ours['batch_size']}, not the profile's {profile_batch}: "
              f"no answer to the {TARGET_RSS_GIB:.0f} GiB target)")
    return {"ours": ours, "public": public, "ratio": ratio}


if __name__ == "__main__":
    main()
