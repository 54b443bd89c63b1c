"""Final real-data training of a searched genotype (what `gtn-nas retrain` runs): the network
with its final-training options (``model``) and the jitted SGD step, optimiser, augmentation and
accuracy (``step``). The recipe is NAO's/DARTS' final training (gtn-spec 3.1); see
``gtn_nas.commands.retrain`` for the driver, its run directory and what it exports."""
