"""Each chapter's grid, as ``label -> RunConfig`` dicts: what to run. The
notebooks import from here (what to run) and ``report`` (how to show it)."""
from . import baselines, emkd, odmt, patience, s4rec

# name -> grid function; every grid takes (profile, datasets=..., seeds=...)
# and, where it says so in its signature, methods=...
GRIDS = {"baselines": baselines.baseline_grid, "ensembles": baselines.ensemble_grid,
         "precision": baselines.precision_grid,
         "emkd-ablations": emkd.ablation_grid,
         "emkd-sensitivity": emkd.sensitivity_grid, "emkd-encoders": emkd.encoder_grid,
         "emkd-depth": emkd.depth_grid, "emkd-main": emkd.main_grid, "emkd-fidelity": emkd.fidelity_grid,
         "emkd-spread": emkd.spread_grid,
         "s4rec-main": s4rec.main_grid, "s4rec-ablations": s4rec.ablation_grid,
         "s4rec-controls": s4rec.duorec_control_grid, "s4rec-batch-order": s4rec.batch_order_grid,
         "s4rec-equal-weights": s4rec.equal_weight_grid, "s4rec-settings": s4rec.settings_control_grid,
         "s4rec-patience": s4rec.patience_check_grid,
         "s4rec-sensitivity": s4rec.sensitivity_grid, "odmt-main": odmt.main_grid,
         "odmt-ablations": odmt.ablation_grid, "odmt-sensitivity": odmt.sensitivity_grid,
         "odmt-inputs": odmt.single_input_grid, "odmt-spread": odmt.spread_grid,
         "odmt-patience": odmt.patience_check_grid}

# Which grids each chapter shows (the performance chapter's budget).
CHAPTER_GRIDS = {
    "01 baselines": ("baselines",),
    "02 ensemble motivation": ("ensembles",),
    "03 EMKD main results": ("emkd-main", "emkd-spread", "emkd-fidelity"),
    "04 EMKD ablations": ("emkd-ablations", "emkd-sensitivity", "emkd-encoders", "emkd-depth"),
    "05 S⁴Rec main results": ("s4rec-main", "s4rec-ablations", "s4rec-controls", "s4rec-batch-order",
                              "s4rec-equal-weights", "s4rec-settings", "s4rec-patience"),
    "07 S⁴Rec sensitivity": ("s4rec-sensitivity",),
    "08 ODMT": ("odmt-main", "odmt-spread", "odmt-patience", "odmt-ablations", "odmt-sensitivity", "odmt-inputs"),
    "10 performance": ("precision",),
}

# The grids whose chapters read each run at its own precision, else its
# fp32 twin (``emkd.budget_results``), and whose missing runs the campaign
# trains in fp32 on every machine (scripts/queue.sh reads this list).
FALLBACK_GRIDS = ("emkd-fidelity", "emkd-encoders")


def campaign_grid(name: str, profile: str) -> dict:
    """``GRIDS[name](profile)`` as the campaign trains it: a grid of
    ``FALLBACK_GRIDS`` with its missing runs at the fallback precision."""
    grid = GRIDS[name](profile)
    return emkd.as_the_campaign_trains(grid) if name in FALLBACK_GRIDS else grid


__all__ = ["CHAPTER_GRIDS", "FALLBACK_GRIDS", "GRIDS", "campaign_grid",
           "baselines", "emkd", "odmt", "patience", "s4rec"]
