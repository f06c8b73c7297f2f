"""HDF5 shards in the Brain-Semantoks layout, subject-level splits and the training reader."""
