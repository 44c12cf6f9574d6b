"""Constants used across the package: written once, imported everywhere."""

IGNORE_INDEX = -100  # label value that the LLM's cross-entropy skips

IMAGE_PLACEHOLDER = "<ImageHere>"  # where the image embeddings go in a prompt
IMAGE_START = "<Img>"
IMAGE_END = "</Img>"

# CLIP's normalisation, used by BLIP-2 / MiniGPT-4 / XrayGPT image processors.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# The 14 CheXpert observations, in CheXpert's order.
CHEXPERT_OBSERVATIONS = (
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
    "No Finding",
)

# The observations a phantom (the embedded default's synthetic radiograph) can show;
# "No Finding" is set when none is drawn. Models, data and tools share them.
PHANTOM_FINDINGS = (
    "Cardiomegaly",
    "Pleural Effusion",
    "Pneumothorax",
    "Consolidation",
    "Lung Lesion",
    "Support Devices",
)
PHANTOM_OBSERVATIONS = (*PHANTOM_FINDINGS, "No Finding")

STOP_STR = "###"  # turn separator of the XrayGPT conversation; generation stops at it

# The provenance file every export writes (``xraygpt export hf|llm``): what makes a folder
# an export, for the model's loader and for --overwrite.
EXPORT_INFO = "xraygpt_export.json"
