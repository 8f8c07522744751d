"""The streaming loader: shard set → batches of both pathways' inputs (``streams``), with its config
(``config``), epoch plan (``epoch_plan``), shard and run reading (``shard_reader``, ``run_reader``), clip
cutting (``clip_maker``), worker → main-process hand-off (``batch_transport``, ``shared_ring``) and the
work on the training device (``device``)."""
