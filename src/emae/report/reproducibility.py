"""Report section on reproducing the run: commands, timings, configurations, version, seed."""

from __future__ import annotations

import json
from pathlib import Path

from emae.report.sections import Block, Runs, Section, _json


def reproducibility_section(runs: Runs, folders: list[Path]) -> Section:
    """The exact commands, their times, the configurations, the version and the seed."""
    from emae import __version__

    blocks: list[Block] = []
    record = runs.pipeline
    if record:
        steps = record.get("steps", {})
        commands = "\n".join(s["command"] for s in steps.values() if s.get("command"))
        if record.get("demo", {}).get("command"):
            commands = record["demo"]["command"] + "\n\n# its steps:\n" + commands
        blocks.append({"type": "code", "caption": "Commands", "text": commands})
        blocks.append(
            {
                "type": "table",
                "id": "timings",
                "caption": f"Steps, {sum(s['seconds'] for s in steps.values()):.0f} s in all",
                "header": ["step", "seconds"],
                "rows": [[name, f"{s['seconds']:.1f}"] for name, s in steps.items()],
            }
        )
        blocks.append(
            {
                "type": "code",
                "caption": "Pipeline configuration",
                "text": json.dumps(record.get("config", {}), indent=2),
            }
        )
    seeds = []
    for folder in folders:
        config = _json(folder / "config.json")
        if isinstance(config.get("run"), dict) and "seed" in config["run"]:
            seeds.append(config["run"]["seed"])
        if config:
            blocks.append(
                {
                    "type": "code",
                    "caption": f"Configuration of {folder}",
                    "text": json.dumps(config.get("run", config), indent=2),
                }
            )
    seed = (record or {}).get("seed")
    if seed is None and seeds:  # runs without a pipeline record: the seeds of their configs
        seed = ", ".join(str(s) for s in dict.fromkeys(seeds))
    items = [("emae version", __version__), ("seed", seed if seed is not None else "–")]
    blocks.insert(0, {"type": "kv", "caption": "Versions", "items": items})
    return {"id": "reproduce", "title": "How to reproduce", "blocks": blocks}
