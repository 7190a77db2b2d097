"""One module a dataset reader (:mod:`cmamlib.data.readers` is the registry and
re-exports every name): ``sysu_mm01``, ``sysu_mm02``, ``regdb``, ``llcm``, ``market1501``,
``msmt17``, ``csv_list``; ``common`` holds what they share."""
