"""The demo's report as text: the lines ``defr demo`` prints, from the report ``defr.demo.run_demo`` returns."""

from __future__ import annotations

from defr.runtime.whole_image import STUDY_MASK_MODES
from defr.video.evaluation import false_events_line


def seed_row(report: dict) -> dict:
    return {
        "seed": report["seed"],
        "events": report["events"],
        "events_any_track": report["events_any_track"],
        "false_events": report["false_events"],
        "frame_hicodet_full": report["frame_hicodet"]["full"],
        "thresholds": report.get("thresholds"),
        "thresholds_chosen_on_this_clip": report["thresholds_chosen_on_this_clip"],
    }


def video_demo_line(report: dict) -> str:
    """One line for the demo's printout."""
    e, a = report["events"], report["events_any_track"]
    return (
        f"video ({report['frames']} frames, {report['fps']:.1f} fps): event precision {e['precision']:.3f}, "
        f"recall {e['recall']:.3f} with identity at tIoU 0.5 ({e['matched']}/{e['truth']} spans; any track: "
        f"{a['precision']:.3f} / {a['recall']:.3f}); frame-level HICO-DET mAP {_fmt(report['frame_hicodet']['full'])}"
        f"\n  false events: {false_events_line(report['false_events'])}"
    )


def _fmt(x) -> str:
    return "n/a" if x is None else f"{x:.4f}"


def summary(report: dict) -> str:
    """The demo's report as the lines the command prints."""
    c = report["classification"]
    keys = ("mAP", "chance_mAP", "few@1", "few@5", "few@10", "ko_mAP", "held_out_mAP")
    lines = [""]
    if "zero_shot" in report:
        z, p = report["zero_shot"], report["pretrained"]
        lines += [
            f"zero-shot, {p['name']} (sha256 {p['sha256'][:12]}…) with MiniLM class embeddings, before any training:",
            "  " + "   ".join(f"{k} {_fmt(z[k])}" for k in keys),
        ]
    lines += [
        "HICO-style classification on the synthetic test split (fractions), fine-tuned:",
        "  " + "   ".join(f"{k} {_fmt(c[k])}" for k in keys),
    ]
    if "detection" in report:
        d = report["detection"]
        lines.append(
            "HICO-DET-style detection (noisy GT boxes as the detector): "
            + "   ".join(f"{k} {_fmt(d[k])}" for k in ("full", "rare", "non_rare"))
        )
        if "mask_effect" in d:
            m = d["mask_effect"]
            lines.append(
                "mask effect (full mAP, hard / released / none): "
                + "; ".join(
                    f"{name} ({m[key]}) " + " / ".join(_fmt(m[name][mode]["full"]) for mode in STUDY_MASK_MODES)
                    for name, key in (("all", "images"), ("two_plus_people", "images_two_plus_people"))
                )
            )
    if "export" in report:
        lines.append(f"export: {_export_line(report['export'])}")
    if "video" in report:
        lines.append(video_demo_line(report["video"]))
        for row in report.get("video_seeds", [])[1:]:
            e = row["events"]
            lines.append(
                f"  video seed {row['seed']}: precision {e['precision']:.3f}, recall {e['recall']:.3f} with identity"
            )
    stages = [k for k in report if k.endswith("_seconds")]
    lines.append("seconds: " + ", ".join(f"{k.removesuffix('_seconds')} {report[k]}" for k in stages))
    return "\n".join(lines)


def _export_line(e: dict) -> str:
    return ", ".join(f"{k} {v:.2e}" for k, v in e.items() if k.startswith("max_") and isinstance(v, float))
