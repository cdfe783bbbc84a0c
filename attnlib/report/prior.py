"""The prior study's published figures, converted to per-token units, and its table beside ours."""

from __future__ import annotations

import pandas as pd

from .latex import booktabs, fmt

# The prior study's published figures (RTX 4090, GPT-2 small, 20 epochs x 400 batches of 16 x 512),
# as listed in shared/reference/prior-implementation-pitfalls.md; their flaws are the paper's section 2.
PRIOR_STUDY = pd.DataFrame(
    [("baseline", "Baseline", 261, 18.3, 1.39, 2.85), ("sliding_window", "Sliding window", 256, 19.8, 1.43, 4.6),
     ("gqa", "GQA", 232, 18.6, 1.33, 2.85), ("mla", "MLA", 232, 17.7, 1.17, 1.2),
     ("flash", "Flash", 213, 16.5, 1.07, 3.6), ("sdpa", "SDPA", 211, 17.6, 1.27, 2.7),
     ("linear", "Linear", 207, 18.5, 1.21, 3.0), ("lsh", "LSH", 206, 17.2, 1.17, 3.1)],
    columns=["variant", "prior_name", "prior_epoch_s", "prior_mem_gb", "prior_energy_mj", "prior_final_loss"],
)
PRIOR_TOKENS_PER_EPOCH = 400 * 16 * 512
PRIOR_EPOCHS = 20  # their energy is the total over all epochs; their time is per epoch
PRIOR_STUDY["prior_tokens_per_s"] = PRIOR_TOKENS_PER_EPOCH / PRIOR_STUDY.prior_epoch_s
PRIOR_STUDY["prior_j_per_token"] = PRIOR_STUDY.prior_energy_mj * 1e6 / (PRIOR_EPOCHS * PRIOR_TOKENS_PER_EPOCH)
PRIOR_STUDY["prior_power_w"] = PRIOR_STUDY.prior_energy_mj * 1e6 / (PRIOR_EPOCHS * PRIOR_STUDY.prior_epoch_s)
PRIOR_NOTES = {"mla": "label leak", "flash": "wrong layout", "linear": "non-causal", "lsh": "random buckets",
               "sliding_window": "saw the future"}


def prior_table(summary: pd.DataFrame) -> str:
    """Their published figures converted to per-token units (20 epochs x 400 batches of 16 x 512) beside ours."""
    ours = summary[summary["mode"] == "eager"].set_index("variant")
    rows = []
    for _, p in PRIOR_STUDY.iterrows():
        o = ours.loc[p.variant] if p.variant in ours.index else None
        get = lambda key: None if o is None else o.get(key)  # noqa: E731
        rows.append([p.prior_name, f"{p.prior_tokens_per_s:,.0f}", f"{p.prior_j_per_token * 1e3:.1f}",
                     f"{p.prior_power_w:.0f}", f"{p.prior_mem_gb:.1f}",
                     f"{p.prior_final_loss:.2f}" + (f" ({PRIOR_NOTES[p.variant]})" if p.variant in PRIOR_NOTES else ""),
                     fmt(get("tokens_per_s_mean"), ",.0f"), fmt(get("gpu_j_per_token_mean"), ".2f", 1e3),
                     fmt(get("gpu_power_mean_w_mean"), ".0f"), fmt(get("gpu_mem_used_peak_bytes_max"), ".1f", 2**-30),
                     fmt(get("val_loss_mean"), ".2f")])
    header = ["variant", "tokens/s", "mJ/token", "W", "GB", "final loss", "tokens/s", "mJ/token", "W", "peak GiB",
              "val loss"]
    return booktabs(header, rows, "lrrrrlrrrrr")




def prior_macros() -> dict[str, str]:
    """The prior study's figures the text quotes, in per-token units."""
    prior = PRIOR_STUDY.set_index("variant")
    return {"PriorEnergyRanking": " $<$ ".join(prior.prior_j_per_token.sort_values().index),
            "PriorBaselineMjPerToken": fmt(prior.loc["baseline"].prior_j_per_token, ".1f", 1e3),
            "PriorBaselinePowerW": fmt(prior.loc["baseline"].prior_power_w, ".0f"),
            "PriorBaselineTokensPerS": fmt(prior.loc["baseline"].prior_tokens_per_s, ",.0f"),
            "PriorEnergySpread": fmt(prior.prior_j_per_token.max() / prior.prior_j_per_token.min(), ".2f")}
