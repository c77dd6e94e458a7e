"""DNI merging: the entry point (`dni.merge`), dense streaming, exact LoRA merging, mergekit-style
configs, checkpoint reading and shard writing, and the merge stage."""
