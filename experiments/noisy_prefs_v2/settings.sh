# The study's SFT and preference-training settings, shared by run.sh and run_sft_seeds.sh.
# The SFT model: 300 steps of the embedded default (a deliberately weak model, test exact match 0.51),
# trained once (seed 0) and used as init and reference of every run (see README, "Deviations").
SFT="data.seed=0 trainer.max_steps=300 trainer.val_check_interval=300 trainer.threads=1 trainer.enable_progress_bar=false logger=csv"
# Preference training: 96 pairs (a third each exact-vs-near, exact-vs-far, exact-vs-garbage), batch 16,
# 48 steps = 8 epochs, so that DPO has time to fit the flipped pairs; uniform flips on the train split;
# clean val/test pairs are exact-vs-near (the hardest kind); 250 test prompts.
DPO="data.format=preference data.seed=0 noise=pairwise_flip data.pair_kinds=[exact_vs_near,exact_vs_far,exact_vs_garbage] \
data.max_train_examples=96 data.max_eval_examples=250 data.batch_size=16 trainer.max_steps=48 trainer.val_check_interval=16 \
trainer.log_every_n_steps=4 eval.val_generate=false optim.lr=2e-4 optim.warmup_steps=4 trainer.threads=1 \
trainer.enable_progress_bar=false logger=csv"

# The four-method subset of run.sh's methods (same spellings) that the per-seed-SFT check
# (run_sft_seeds.sh) and the gap-dependent-flip slice (run_extra.sh) run.
SUBSET_METHODS="dpo           objective=dpo
rdpo          objective=rdpo objective.epsilon=0.1
dr_dpo_bp1    objective=dr_dpo objective.aggregator.beta_prime=1.0
beta_dpo      objective=beta_dpo"
