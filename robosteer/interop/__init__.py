"""Interoperability with other interpretability libraries: nnsight and TransformerLens.

Both are optional (``pip install robosteer[interop]``) and imported only inside the
functions that use them, so importing this package costs nothing:

- ``robosteer.interop.nnsight``: wrap a robosteer model with ``nnsight.NNsight`` and read or
  write any hook site (``llm.blocks.3.attn.hook_z``, ``dino.blocks.0.attn.hook_z``, ...) inside
  an nnsight trace, with the same values as ``vla.run_with_cache``;
- ``robosteer.interop.transformer_lens``: export the LLM tower to a TransformerLens
  ``TransformerBridge`` (offline, from the module object) and feed it the multimodal
  input embeddings.

Usage::

    from robosteer.interop.nnsight import wrap, read, write
    from robosteer.interop.transformer_lens import to_transformer_lens, bridge_inputs
"""
