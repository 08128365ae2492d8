"""The magic numbers of the OpenVLA family, named once, with where they come from."""

# Image normalisation. The released OpenVLA processor stores ImageNet mean/std for the
# DINO half (timm's resolve_model_data_config); SigLIP uses 0.5/0.5.
DINO_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
DINO_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
SIGLIP_MEAN: tuple[float, float, float] = (0.5, 0.5, 0.5)
SIGLIP_STD: tuple[float, float, float] = (0.5, 0.5, 0.5)

# Actions: 256 uniform bins over [-1, 1]; the action tokens are the last 256 ids of the
# base vocabulary (Llama-2: 31744..31999), token id = vocab_end - np.digitize(a, bins).
N_ACTION_BINS: int = 256
LLAMA2_ACTION_VOCAB_END: int = 32000

# OpenVLA's predict_action appends the bare "▁" sentencepiece (Llama-2 id 29871) to the
# prompt when the last id is not already that token.
LLAMA2_PROMPT_SUFFIX_ID: int = 29871

# Special ids of the Llama-2 tokenizer (also used by robosteer's own small tokenizer).
BOS_ID: int = 1
EOS_ID: int = 2

# OpenVLA's prompt (instruction lower-cased in training).
PROMPT_TEMPLATE: str = "In: What action should the robot take to {instruction}?\nOut:"
