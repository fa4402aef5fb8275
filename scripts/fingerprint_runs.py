"""Fingerprints of three short seeded runs, to show that a change to the engine changes no
weight and no figure: run it on two checkouts and compare the JSON it prints.

    python scripts/fingerprint_runs.py > after.json    # and on the other checkout > before.json
    diff before.json after.json

For a classification run (2 epochs, the light preset, --accumulate 2), a run from the
decoded cache and a segmentation run, on CPU: a hash of last.pt's and best.pt's weights,
of every metrics record without its timing fields, the checkpoints' keys, the CSV header,
the run folder's files and the summary's keys.
"""
import hashlib, json, sys, tempfile
from pathlib import Path
import torch
from prep.testing import make_classification_dataset, make_segmentation_dataset, train_briefly

def digest(state):
    h = hashlib.sha256()
    for k in sorted(state):
        h.update(k.encode()); h.update(state[k].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]

TIMING = {"images_per_s", "loader_images_per_s", "data_wait", "elapsed_s"}
out = {}
base = Path(tempfile.mkdtemp())
cls = make_classification_dataset(base / "cls", per_class=12, valid_per_class=4)
seg = make_segmentation_dataset(base / "seg", classes=3)
runs = {
    "cls": ("resnet-finetune", cls, dict(epochs=2, arch="resnet18", preset="light", accumulate=2)),
    "cls_cached": ("resnet-finetune", cls, dict(epochs=1, arch="resnet18", cache="disk", seed=3)),
    "seg": ("unet", seg, dict(epochs=2, arch="unet-resnet18")),
}
for name, (trainer, data, opts) in runs.items():
    run_dir = base / f"run-{name}"
    summary = train_briefly(trainer, data, run_dir, **opts)
    last = torch.load(run_dir / "last.pt", weights_only=False, map_location="cpu")
    best = torch.load(run_dir / "best.pt", weights_only=False, map_location="cpu")
    records = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines()]
    records = [{k: v for k, v in r.items() if k not in TIMING} for r in records]
    out[name] = {
        "weights_last": digest(last["model"]), "weights_best": digest(best["model"]),
        "last_keys": sorted(last), "best_keys": sorted(best),
        "metrics": hashlib.sha256(json.dumps(records, sort_keys=True).encode()).hexdigest()[:16],
        "csv_header": (run_dir / "metrics.csv").read_text().splitlines()[0],
        "files": sorted(p.name for p in run_dir.iterdir()),
        "summary_keys": sorted(summary),
        "status": summary["status"],
    }
print(json.dumps(out, indent=1))
