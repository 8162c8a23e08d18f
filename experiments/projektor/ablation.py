"""How much of Projektor's fit on the wave-three swarm the OT distance carries: the Spearman of the raw
OT distance (no fit) with the loss, and the same 5 folds of an OLS quadratic in the weights without OT
(design [1, p_i, p_i^2], i < m). Run after run_wave3.sh:

    PYTHONPATH=src OMP_NUM_THREADS=1 python experiments/projektor/ablation.py
"""
import warnings

import numpy as np

warnings.simplefilter("ignore")
from scipy.stats import spearmanr
from sklearn.model_selection import KFold
from assay.mixsearch.table import load_table
from assay.mixsearch.pilots import MixtureOT, Pilots
t = load_table("experiments/projektor/wave3/table.csv", target="val_loss_mean", echo=lambda s: None)
ot = MixtureOT(Pilots.load("experiments/projektor/wave3/pilots.npz"), t.domains).values(t.X)
print("spearman(OT, loss) =", spearmanr(ot, t.y).statistic)
P = t.X[:, :-1]
D = np.hstack([np.ones((len(P),1)), P, P**2])
pred = np.full(len(t.y), np.nan)
for tr, te in KFold(5, shuffle=True, random_state=0).split(D):
    c = np.linalg.lstsq(D[tr], t.y[tr], rcond=None)[0]; pred[te] = D[te] @ c
print("quadratic in p without OT, 5-fold spearman =", spearmanr(pred, t.y).statistic)
