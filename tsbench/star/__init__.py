"""STaR (Self-Taught Reasoner, Zelikman et al. 2022): a strategy that spends compute at train time.

Each round samples rationales on a train split with the current model, keeps those that reach the
right answer (rationalising, with the answer as a hint, where none does), fine-tunes a LoRA adapter
on them from the base model, merges it, and evaluates the merged model on the test split through
the normal run pipeline. Training compute goes on a ledger of its own beside test-time compute.

Modules: rationales (sampling and filtering), lora (fine-tune, save, merge), ledger (train
compute), loop (rounds), cli (`tsbench star`). See docs/STAR.md.
"""
