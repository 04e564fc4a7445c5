"""The embedded offline data source: a deterministic synthetic OLIVES generator.

It writes `<out_dir>/{train,test}/part-NNNNN.parquet` in exactly the Hugging Face
`gOLIVES/OLIVES_Dataset` `biomarker_detection` schema, so every later stage runs unchanged on
real or synthetic data. Two layers, seeded per split, patient and volume (numpy `SeedSequence`),
so the bytes depend on the seed and the sizes, never on generation order or worker count:

* a label model (`labels`, cheap): patient -> eyes -> visits -> volumes of B-scans, calibrated
  against the real OLIVES training labels and the VIP Cup RECOVERY test set (`presets`).
* a renderer (`anatomy`, `paint`, `render`): layered retina, choroid, speckle and scale bar,
  with each positive biomarker drawn at a visibility set by `difficulty`, vectorised numpy,
  PNG-encoded with zlib (`png`).

`writer.generate` renders volumes in worker processes (`parallel`) and writes them in order.
"""

from olives.data.synthetic.anatomy import Anatomy, draw_anatomy
from olives.data.synthetic.labels import (
    TEST_MODEL,
    TRAIN_MODEL,
    LabelModel,
    Volume,
    iter_volumes,
    label_table,
)
from olives.data.synthetic.parallel import resolve_workers
from olives.data.synthetic.png import encode_png
from olives.data.synthetic.presets import (
    PRESETS,
    REAL_CORRELATIONS,
    REAL_TRAIN_PREVALENCE,
    RECOVERY_PREVALENCE,
    SPLITS,
    TEST_ID_OFFSET,
    Sizes,
    resolve_preset,
)
from olives.data.synthetic.render import (
    iter_images,
    render_rng,
    render_scan,
    volume_images,
)
from olives.data.synthetic.writer import generate, volume_pngs

__all__ = [
    "PRESETS",
    "REAL_CORRELATIONS",
    "REAL_TRAIN_PREVALENCE",
    "RECOVERY_PREVALENCE",
    "SPLITS",
    "TEST_ID_OFFSET",
    "TEST_MODEL",
    "TRAIN_MODEL",
    "Anatomy",
    "LabelModel",
    "Sizes",
    "Volume",
    "draw_anatomy",
    "encode_png",
    "generate",
    "iter_images",
    "iter_volumes",
    "label_table",
    "render_rng",
    "render_scan",
    "resolve_preset",
    "resolve_workers",
    "volume_images",
    "volume_pngs",
]
