"""The paper's stages (paper/dvc.yaml, paper/teacher/dvc.yaml), apart from the main pipeline.

One module per stage, run by `olives paper <stage>`: the ablation grid (`ablate`, `aggregate`),
the init axis (`init_data`, `init_pretrain`, `init_cell`) and the teacher axis (`fold`,
`ensemble`, `pseudo`, `single`, `student`, `teacher_table`, `teacher_track`). They build on the
main stages (`olives.stages.train`, `evaluate`, `track`), never the other way round.
"""
