#!/usr/bin/env sh
# Recreate the shipped adversarially trained digits model robustness/weights/digits_cnn_at.pt:
# PGD-7 adversarial training (Madry et al. 2018) of a SmallCNN (width 16, as the standard model)
# on the digits train split, Linf eps 0.2, 30 epochs, SGD + one-cycle learning rate, seed 0,
# one CPU thread (about a minute on one core). Run from the repository root.
set -eu
# the shipped file exists: replace it, unless the caller resumes an interrupted run (--resume)
case " $* " in *" --resume "*) ;; *) set -- --overwrite "$@" ;; esac
robustness train --data digits --arch small-cnn --arch-kwargs width=16 --method pgd --eps 0.2 --norm linf \
    --steps 7 --epochs 30 --batch-size 128 --lr 0.1 --seed 0 --threads 1 --device cpu \
    --out robustness/weights/digits_cnn_at.pt "$@"
# the per-epoch training state and its history log are not shipped
rm -f robustness/weights/digits_cnn_at.pt.state robustness/weights/digits_cnn_at.pt.history.json
