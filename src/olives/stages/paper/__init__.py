"""The paper's stages (paper/dvc.yaml, paper/teacher/dvc.yaml), apart from the main pipeline.

One module per stage, run by `olives paper <stage>`: the axes' data (`data`), the fusion x loss
axis (`ablate`, `aggregate`), the init axis (`init_pretrain`, `init_cell`) and the teacher axis
(`fold`, `ensemble`, `pseudo`, `single`, `student`, `control`, `teacher_table`,
`teacher_track`). Every run is keyed by its patient split's seed and its training seed. They
build on the main stages (`olives.stages.train`, `evaluate`, `track`), never the other way round.
"""
