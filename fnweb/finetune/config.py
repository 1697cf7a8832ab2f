"""The settings of one fine-tuning run, checked before any work starts.

``TrainConfig`` is plain data (JSON in, JSON out: it is saved with every run as
``train_config.json``). ``validate`` refuses values out of range with a message that
names the setting and its allowed range. It knows nothing about models or data.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Optional

from ..archs import DEFAULT_SITE, SITES
from ..checks import check_seed, whole_numbers
from ..errors import FnwebError
from ..interventions import DEFAULT_INTERVENTION, INTERVENTIONS
from ..masks import DEFAULT_PRESERVE_SCOPE, PRESERVE_SCOPES, layers_from_text
from ..models import DTYPES, EMBEDDED_ID, QUANTIZATIONS, check_device

NO_MASK, RANDOM = "none", "random"
_FIXED = tuple(name for name, i in INTERVENTIONS.items() if not i.takes_alpha)  # a run has no alpha to give
MASK_MODES = (NO_MASK, *_FIXED, RANDOM)  # none, an intervention on the network, or a random control
# The original package's older names for the modes: "key" zeroed the key (network) neurons,
# "complement" zeroed every neuron but them (its ica_mask.py); accepted on the command line.
MASK_MODE_ALIASES = {"key": "lesion", "complement": "preserve"}
CONTROL_OF = _FIXED  # what a random control mimics
LOSS_ON = ("response", "all")
SCHEDULES = ("linear", "cosine", "constant", "constant_with_warmup")


@dataclass
class TrainConfig:
    """Everything that decides a fine-tuning run (saved with it)."""

    # what to train on, and where the run goes
    dataset: str = ""  # builtin:NAME, a local .json/.jsonl/.csv/.parquet file, or a Hub dataset
    output_dir: str = ""  # the run folder (must not exist unless overwrite)
    dataset_config: Optional[str] = None  # Hub dataset configuration
    dataset_split: str = "train"  # Hub dataset split
    overwrite: bool = False  # replace an existing run folder

    # the model
    model_id: str = EMBEDDED_ID
    dtype: str = "auto"
    device: str = "auto"
    quantization: str = "none"  # none | 4bit (QLoRA) | 8bit
    revision: Optional[str] = None
    trust_remote_code: bool = False

    # LoRA
    lora_r: int = 16
    lora_alpha: float = 32.0
    lora_dropout: float = 0.1
    lora_targets: Optional[list[str]] = None  # None: the architecture table's default targets

    # the mask
    mask_mode: str = NO_MASK  # one of MASK_MODES: none, an intervention, or random (a matched random control)
    control_of: str = DEFAULT_INTERVENTION  # the intervention a random control copies
    template_path: Optional[str] = None  # None with a mask: computed from the training prompts
    component_ids: list[int] = field(default_factory=lambda: [0])
    mask_layers: Optional[str] = None  # '0,2:5,8' (ranges end-exclusive); None: every layer
    random_seed: Optional[int] = None  # draw of the random control; None: the run's seed
    preserve_scope: str = DEFAULT_PRESERVE_SCOPE  # fnweb.masks.PRESERVE_SCOPES: may preserve leave a layer untouched?
    restrict_updates: bool = False  # only the allowed neurons' MLP weights may change
    mask_activations: bool = True  # False (with restrict_updates): the mask limits updates, the model runs unmasked
    ica_components: int = 5  # k of a template computed on the fly
    ica_percentile: float = 98.0  # threshold of a template computed on the fly
    ica_samples: int = 100  # training prompts used to compute a template on the fly
    site: str = DEFAULT_SITE  # site of a template computed on the fly

    # training
    max_steps: int = -1  # > 0 overrides epochs
    num_epochs: float = 3.0
    learning_rate: float = 2e-4
    lr_schedule: str = "linear"
    warmup_ratio: float = 0.0
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0  # 0: no clipping
    batch_size: int = 4  # examples per device per micro-batch
    grad_accum: int = 1  # micro-batches per optimizer step
    max_seq_len: int = 2048  # longer examples are cut at the end; those left without a response are dropped
    validation_split: float = 0.1
    loss_on: str = "response"  # response tokens only (EOS included) | all tokens
    prompt_format: str = "auto"  # auto | chat | alpaca | chatml | basic
    seed: int = 0
    eval_interval: Optional[int] = None  # steps between eval losses; None: about 5 per run; 0: never
    gradient_checkpointing: bool = False

    # learning and forgetting
    max_eval_examples: int = 64  # validation examples scored for the task loss
    general_sets: Optional[list[str]] = None  # built-in sets for forgetting; None: those not trained on
    general_per_set: int = 8  # held-out prompts per general set
    eval_batch_size: int = 8

    def __post_init__(self):
        # JSON gives lists; users give tuples or comma text: normalise once here.
        if isinstance(self.lora_targets, str):
            self.lora_targets = [t.strip() for t in self.lora_targets.split(",") if t.strip()]
        if self.lora_targets is not None:
            self.lora_targets = list(self.lora_targets) or None
        self.component_ids = whole_numbers(self.component_ids, "A component id")  # never 2.5 quietly made 2
        if self.general_sets is not None:
            self.general_sets = list(self.general_sets)

    def validate(self) -> "TrainConfig":
        _check_data(self)
        _check_model(self)
        _check_lora(self)
        _check_mask(self)
        _check_training(self)
        return self

    @property
    def random_draw(self) -> int:
        return self.seed if self.random_seed is None else self.random_seed

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def _range(name: str, value, low, high, hint: str = "") -> None:
    if not (low <= value <= high):
        raise FnwebError(f"{name} must lie between {low:g} and {high:g} (got {value:g}).{hint}")


def _choice(name: str, value, choices) -> None:
    if value not in choices:
        raise FnwebError(f"Unknown {name} '{value}'; choose one of: {', '.join(choices)}.")


def _check_data(c: TrainConfig) -> None:
    if not c.dataset or not str(c.dataset).strip():
        raise FnwebError("No dataset given: pick a built-in set (builtin:NAME), a local file or a Hub dataset.")
    if not c.output_dir or not str(c.output_dir).strip():
        raise FnwebError("No output folder given: name a folder for the run (it must not exist yet).")
    _range("Validation split", c.validation_split, 0.0, 0.5)
    _range("Max sequence length", c.max_seq_len, 8, 131072)
    _choice("loss target", c.loss_on, LOSS_ON)
    _range("Max eval examples", c.max_eval_examples, 1, 100000)
    _range("General prompts per set", c.general_per_set, 0, 1000)
    _range("Eval batch size", c.eval_batch_size, 1, 1024)


def _check_model(c: TrainConfig) -> None:
    if not c.model_id or not str(c.model_id).strip():
        raise FnwebError("No model given: enter a Hub id, a local folder, or use the embedded model.")
    _choice("dtype", c.dtype, DTYPES)
    _choice("quantization", c.quantization, QUANTIZATIONS)
    check_device(c.device)


def _check_lora(c: TrainConfig) -> None:
    _range("LoRA rank r", c.lora_r, 1, 1024)
    _range("LoRA alpha", c.lora_alpha, 1e-3, 1e5)
    _range("LoRA dropout", c.lora_dropout, 0.0, 0.9)


def _check_mask(c: TrainConfig) -> None:
    _choice("mask mode", c.mask_mode, MASK_MODES)
    _choice("random-control mode", c.control_of, CONTROL_OF)
    _choice("site", c.site, tuple(SITES))
    _choice("preserve scope", c.preserve_scope, tuple(PRESERVE_SCOPES))
    if c.mask_mode != NO_MASK:
        layers_from_text(c.mask_layers, None)  # its form now; against the model's layers once it is loaded
    if c.random_seed is not None:
        check_seed(c.random_seed, "Random-control seed")
    if c.restrict_updates and c.mask_mode == NO_MASK:
        raise FnwebError("Restricted updates need a mask: choose mask mode lesion, preserve or random.")
    if not c.mask_activations and not c.restrict_updates and c.mask_mode != NO_MASK:
        raise FnwebError("A mask that neither masks activations nor restricts updates does nothing: "
                         "turn on restricted updates, or mask activations.")
    if c.mask_mode != NO_MASK and not c.component_ids:
        raise FnwebError("Choose at least one component to mask (e.g. 0 or 0,3).")
    if c.mask_mode != NO_MASK and c.template_path is None:
        _range("ICA components", c.ica_components, 1, 512)
        _range("ICA percentile", c.ica_percentile, 50.0, 99.99)
        _range("ICA samples", c.ica_samples, 2, 100000)
        outside = [i for i in c.component_ids if not 0 <= i < c.ica_components]
        if outside:
            raise FnwebError(
                f"Component {', '.join(map(str, outside))} is not among the {c.ica_components} components computed "
                f"from the training data (0..{c.ica_components - 1}): choose others or raise the ICA components."
            )


def _check_training(c: TrainConfig) -> None:
    if not (0 < c.learning_rate <= 1):
        raise FnwebError(f"Learning rate must be above 0 and at most 1 (got {c.learning_rate:g}); try 2e-4.")
    if c.max_steps == 0 or c.max_steps < -1 or c.max_steps > 1_000_000:
        raise FnwebError(f"Max steps must be -1 (use epochs) or between 1 and 1000000 (got {c.max_steps}).")
    if c.max_steps == -1:
        _range("Epochs", c.num_epochs, 0.01, 1000, " Or set max steps instead.")
    _range("Batch size", c.batch_size, 1, 1024)
    _range("Gradient accumulation", c.grad_accum, 1, 1024)
    _choice("learning-rate schedule", c.lr_schedule, SCHEDULES)
    _range("Warmup ratio", c.warmup_ratio, 0.0, 0.5)
    _range("Weight decay", c.weight_decay, 0.0, 1.0)
    _range("Max gradient norm", c.max_grad_norm, 0.0, 1e6)
    check_seed(c.seed)
    if c.eval_interval is not None:
        _range("Eval interval", c.eval_interval, 0, 1_000_000)
