"""A package that brings gradbench an estimator (:mod:`.estimator`) and a model (:mod:`.model`),
one module each, found through its entry points (``entry_points.txt`` of its dist-info)."""
