"""Policy models: the embedded tiny Llama default and loading of any Hugging Face causal LM.

- ``tiny``: a byte-level BPE tokenizer trained offline on the domain corpus, a tiny Llama-architecture
  model, save/load through the ``Auto*`` classes, device choice and batched generation.
- ``sft``: the short supervised warm start (TRL ``SFTTrainer``) that turns the random tiny model into a
  base policy that writes trajectories in the expected format.

Nothing here imports Dagster; the ``base_model`` asset wires these functions up.
"""
