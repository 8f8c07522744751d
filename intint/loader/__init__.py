"""The streaming loader: shard set → batches of both pathways' inputs (``streams``), with its config
(``config``), epoch plan (``epoch_plan``), clip cutting (``clip_maker``), worker → main-process hand-off
(``batch_transport``, ``shared_ring``) and the work on the training device (``device``)."""
