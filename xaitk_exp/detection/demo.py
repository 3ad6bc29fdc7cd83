"""``python -m xaitk_exp.detection.demo <folder> [n_images]``: write a small COCO-annotated folder of drawn shapes
(``<folder>/img_<k>.png`` and ``<folder>/instances.json``) for trying ``task=detection`` with the toy detector
``model=maite model._target_=xaitk_exp.detection.toy.MaiteShapesDetector`` (no download)."""

from __future__ import annotations

import sys


def main(argv: list[str]) -> int:
    from xaitk_exp.detection.toy import write_coco_folder

    if not 1 <= len(argv) <= 2 or (len(argv) == 2 and not argv[1].isdigit()):
        print("usage: python -m xaitk_exp.detection.demo <folder> [n_images]", file=sys.stderr)
        return 2
    path, scenes = write_coco_folder(argv[0], n_images=int(argv[1]) if len(argv) == 2 else 8, size=(96, 96),
                                     n_objects=3)
    print(f"{len(scenes)} images and their COCO annotations: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
