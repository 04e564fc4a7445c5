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

CST is measured on the rendered retina (`clinical`: mean ILM-to-RPE thickness over the central
1 mm of the foveal scan, on the cheap geometry draws at the 504x496 reference size), so it
follows the edema and cysts the images show and does not depend on the image size; BCVA follows
the fluid directly and through CST.

`writer.generate` renders volumes in worker processes (`parallel`) and writes them in order.
"""

from olives.data.synthetic.anatomy import Anatomy, Geometry, draw_anatomy, draw_geometry
from olives.data.synthetic.clinical import iter_volumes, label_table, measure_cst
from olives.data.synthetic.labels import TEST_MODEL, TRAIN_MODEL, LabelModel, Volume
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
    "Geometry",
    "LabelModel",
    "Sizes",
    "Volume",
    "draw_anatomy",
    "draw_geometry",
    "encode_png",
    "generate",
    "iter_images",
    "iter_volumes",
    "label_table",
    "measure_cst",
    "render_rng",
    "render_scan",
    "resolve_preset",
    "resolve_workers",
    "volume_images",
    "volume_pngs",
]
