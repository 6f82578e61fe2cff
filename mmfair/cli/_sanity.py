"""The real-data sanity card as a Rich table (``mmfair prep`` prints it; :mod:`mmfair.core.data.sanity` builds it)."""

from __future__ import annotations

from rich.table import Table

from mmfair.core.workspace import Workspace


def sanity_table(ws: Workspace) -> Table:
    """The cohort's size, mortality, CXR pairing and phenotype prevalence beside the published ranges."""
    from mmfair.core.data.sanity import workspace_card

    card, version, source = workspace_card(ws)
    table = Table(title=f"sanity card: {source or 'source'} (MIMIC {version}) beside published cohorts",
                  caption="; ".join(dict.fromkeys(f"{r.about}: {r.source}" for r in card.itertuples())))
    for col in ("quantity", "value", "reference", "status"):
        table.add_column(col, justify="right" if col in ("value", "reference") else "left")
    for r in card.itertuples():
        table.add_row(r.quantity, r.value, r.reference, f"[red]{r.status}[/]" if r.status == "far outside" else r.status)
    return table
