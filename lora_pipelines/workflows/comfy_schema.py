"""The real ComfyUI v0.3.64 node schema (`GET /object_info`) and a validator that answers like its `POST /prompt`.

The validator mirrors `execution.validate_prompt` / `validate_inputs` of that version: only output nodes and
their ancestors are checked, per-node errors carry the server's shapes, and `as_http_400_body()` is the body the
server sends with HTTP 400. Model-file combos are empty in the dump, so their choices come from `available_files`
(the pod's models/ folders), which is how an unknown `lora_name` becomes a 400.

`object_info_pulid_flux_ll.json.gz` holds the 7 nodes of lldacing/ComfyUI_PuLID_Flux_ll in the same format, copied
by hand from its `pulidflux.py` (commit ba90657f, 2025-04-08): the PuLID pack the pod runs (docs/modal.md).
"""

from __future__ import annotations

import copy
import gzip
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Any

SCHEMA_PACKAGE = "lora_pipelines.workflows"
SCHEMA_DIR = "schema"
SCHEMA_FILES = ("object_info.json.gz", "object_info_pulid_flux_ll.json.gz")
COMFYUI_VERSION = "0.3.64"

# folder_paths.supported_pt_extensions: what a models/ folder lists.
MODEL_EXTENSIONS = (".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft")
# Nodes whose VALIDATE_INPUTS takes over the check of a file input (the combo list is then skipped).
_CUSTOM_FILE_VALIDATION = {("LoadImage", "image"), ("LoadImageMask", "image")}


def _read_packaged_json(name: str) -> Any:
    data = resources.files(SCHEMA_PACKAGE).joinpath(SCHEMA_DIR, name).read_bytes()
    return json.loads(gzip.decompress(data))


@lru_cache(maxsize=1)
def _cached_object_info() -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for name in SCHEMA_FILES:
        merged.update(_read_packaged_json(name))
    return merged


def load_object_info() -> dict[str, Any]:
    """Core nodes + the PuLID-Flux (ll) nodes, as `/object_info` returns them.

    A fresh copy; the cache stays untouched."""
    return copy.deepcopy(_cached_object_info())


def load_object_info_files(*paths: Any) -> dict[str, Any]:
    """Merge `/object_info` dumps read from disk (plain or .gz JSON), later files overriding earlier ones."""
    merged: dict[str, Any] = {}
    for path in paths:
        with open(path, "rb") as fh:
            raw = fh.read()
        if str(path).endswith(".gz"):
            raw = gzip.decompress(raw)
        merged.update(json.loads(raw))
    return merged


@lru_cache(maxsize=1)
def _cached_file_combos() -> dict[str, dict[str, list[str]]]:
    return _read_packaged_json("file_combos.json.gz")


def file_combo_folders() -> dict[str, dict[str, list[str]]]:
    """{node class: {input name: [models/ folders whose files are the choices]}}."""
    return copy.deepcopy(_cached_file_combos())


def with_available_files(object_info: Mapping[str, Any],
                         available_files: Mapping[str, Sequence[str]]) -> dict[str, Any]:
    """The `/object_info` a pod holding `available_files` would serve: file combos list those files."""
    filled = copy.deepcopy(dict(object_info))
    for class_type, inputs in _cached_file_combos().items():
        node = filled.get(class_type)
        if node is None:
            continue
        for input_name, folders in inputs.items():
            for category in ("required", "optional"):
                spec = node["input"].get(category, {}).get(input_name)
                if spec is None:
                    continue
                if (class_type, input_name) in _CUSTOM_FILE_VALIDATION and "input" not in available_files:
                    continue
                extras = spec[0] if class_type == "VAELoader" and isinstance(spec[0], list) else []
                files = _files_in(folders, available_files, extras)
                if isinstance(spec[0], list):
                    spec[0] = files
                elif spec[0] == "COMBO" and len(spec) > 1:
                    spec[1]["options"] = files
    return filled


def _files_in(folders: Sequence[str], available_files: Mapping[str, Sequence[str]], extras: Sequence[str]) -> list[str]:
    """Sorted files of the folders, then the node's fixed extra choices (VAELoader's "pixel_space")."""
    names: set[str] = set()
    for folder in folders:
        names.update(available_files.get(folder, ()))
    return sorted(names) + [extra for extra in extras if extra not in names]


@dataclass(frozen=True)
class PromptValidation:
    """Outcome of validating an API-format prompt. `ok` is what decides HTTP 200 vs 400 on the real server:
    at least one output node validated (other outputs may still have `node_errors`)."""

    ok: bool
    error: dict[str, Any] | None
    node_errors: dict[str, Any] = field(default_factory=dict)
    good_outputs: tuple[str, ...] = ()

    @property
    def http_status(self) -> int:
        return 200 if self.ok else 400

    def as_http_400_body(self) -> dict[str, Any]:
        """`{"error": {...}, "node_errors": {...}}` exactly as `POST /prompt` answers a rejected prompt."""
        return {"error": self.error, "node_errors": self.node_errors}

    def error_summary(self) -> str:
        """One line a user can act on: the top-level message plus each node's first error."""
        if self.error is None and not self.node_errors:
            return "valid"
        parts = [self.error["message"]] if self.error else []
        for node_id, entry in self.node_errors.items():
            for err in entry["errors"]:
                parts.append(f"node {node_id} ({entry['class_type']}): {err['type']}: {err['details']}")
        return "; ".join(parts)


def _invalid(message: str, details: str = "", type_: str = "invalid_prompt") -> PromptValidation:
    return PromptValidation(ok=False, error={"type": type_, "message": message, "details": details, "extra_info": {}})


def validate_node_input(received_type: Any, input_type: Any) -> bool:
    """ComfyUI's link type check: equal, "*" on either side, or overlapping "A,B" unions."""
    if received_type == input_type:
        return True
    if not isinstance(received_type, str) or not isinstance(input_type, str):
        return False
    received = {t.strip() for t in received_type.split(",")}
    accepted = {t.strip() for t in input_type.split(",")}
    if "*" in received or "*" in accepted:
        return True
    return bool(received & accepted)


class _Validator:
    def __init__(self, prompt: Mapping[str, Any], object_info: Mapping[str, Any],
                 available_files: Mapping[str, Sequence[str]] | None) -> None:
        self.prompt = prompt
        self.object_info = object_info
        self.available_files = available_files
        self.validated: dict[str, tuple[bool, list[dict[str, Any]], str]] = {}
        self.visiting: list[str] = []
        self.file_combos = _cached_file_combos()

    def combo_choices(self, class_type: str, input_name: str, schema_choices: list[Any]) -> list[Any] | None:
        """Choices for a V1 combo; None means "any model file name passes" (file combo, files unknown)."""
        folders = self.file_combos.get(class_type, {}).get(input_name)
        if folders is None:
            return schema_choices
        if self.available_files is None:
            return None
        return _files_in(folders, self.available_files, schema_choices if class_type == "VAELoader" else [])

    def validate_inputs(self, unique_id: str) -> tuple[bool, list[dict[str, Any]], str]:
        if unique_id in self.validated:
            return self.validated[unique_id]
        if unique_id in self.visiting:
            raise RecursionError(f"dependency cycle through node {unique_id}")
        node = self.prompt[unique_id]
        inputs = node.get("inputs", {}) or {}
        class_type = node["class_type"]
        class_inputs = self.object_info[class_type]["input"]
        required = class_inputs.get("required", {}) or {}
        optional = class_inputs.get("optional", {}) or {}
        errors: list[dict[str, Any]] = []
        valid = True

        for name in list(required) + [n for n in optional if n not in required]:
            spec = required[name] if name in required else optional[name]
            input_type = spec[0]
            extra_info = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
            info = [input_type, extra_info]
            if name not in inputs:
                if name in required:
                    errors.append({"type": "required_input_missing", "message": "Required input is missing",
                                   "details": name, "extra_info": {"input_name": name}})
                continue
            val = inputs[name]
            if isinstance(val, list):
                if len(val) != 2:
                    errors.append({"type": "bad_linked_input",
                                   "message": "Bad linked input, must be a length-2 list of [node_id, slot_index]",
                                   "details": name,
                                   "extra_info": {"input_name": name, "input_config": info, "received_value": val}})
                    continue
                o_id, slot = val
                # Outside the try, as on the server: a missing node or bad slot escapes to the caller's handler.
                received_type = self.object_info[self.prompt[o_id]["class_type"]]["output"][slot]
                if not validate_node_input(received_type, input_type):
                    errors.append({"type": "return_type_mismatch",
                                   "message": "Return type mismatch between linked nodes",
                                   "details": f"{name}, received_type({received_type}) "
                                              f"mismatch input_type({input_type})",
                                   "extra_info": {"input_name": name, "input_config": info,
                                                  "received_type": received_type, "linked_node": val}})
                    continue
                try:
                    self.visiting.append(unique_id)
                    try:
                        result = self.validate_inputs(o_id)
                    finally:
                        self.visiting.pop()
                    if result[0] is False:
                        valid = False
                        continue
                except Exception as ex:  # noqa: BLE001 - mirrors the server turning any exception into an error
                    valid = False
                    self.validated[o_id] = (False, [{
                        "type": "exception_during_inner_validation",
                        "message": "Exception when validating inner node",
                        "details": str(ex),
                        "extra_info": {"input_name": name, "input_config": info, "exception_message": str(ex),
                                       "exception_type": _type_name(ex), "traceback": [], "linked_node": val},
                    }], o_id)
                    continue
                continue

            try:
                if isinstance(val, dict) and "__value__" in val:
                    val = val["__value__"]
                if input_type == "INT":
                    val = int(val)
                elif input_type == "FLOAT":
                    val = float(val)
                elif input_type == "STRING":
                    val = str(val)
                elif input_type == "BOOLEAN":
                    val = bool(val)
            except Exception as ex:  # noqa: BLE001
                errors.append({"type": "invalid_input_type",
                               "message": f"Failed to convert an input value to a {input_type} value",
                               "details": f"{name}, {val}, {ex}",
                               "extra_info": {"input_name": name, "input_config": info, "received_value": val,
                                              "exception_message": str(ex)}})
                continue

            if (class_type, name) in _CUSTOM_FILE_VALIDATION:
                files = None if self.available_files is None else self.available_files.get("input")
                if files is not None and val not in files:
                    errors.append({"type": "custom_validation_failed", "message": "Custom validation failed for node",
                                   "details": f"{name} - Invalid image file: {val}",
                                   "extra_info": {"input_name": name}})
                continue

            if "min" in extra_info and _lt(val, extra_info["min"]):
                errors.append({"type": "value_smaller_than_min",
                               "message": f"Value {val} smaller than min of {extra_info['min']}", "details": name,
                               "extra_info": {"input_name": name, "input_config": info, "received_value": val}})
                continue
            if "max" in extra_info and _lt(extra_info["max"], val):
                errors.append({"type": "value_bigger_than_max",
                               "message": f"Value {val} bigger than max of {extra_info['max']}", "details": name,
                               "extra_info": {"input_name": name, "input_config": info, "received_value": val}})
                continue
            # V3 "COMBO" inputs are not checked by 0.3.64; V1 combos are.
            if isinstance(input_type, list):
                choices = self.combo_choices(class_type, name, input_type)
                if choices is None:
                    if isinstance(val, str) and val.lower().endswith(MODEL_EXTENSIONS):
                        continue
                    choices = []
                if val not in choices:
                    config: Any = [choices, extra_info]
                    if len(choices) > 20:
                        list_info, config = f"(list of length {len(choices)})", None
                    else:
                        list_info = str(choices)
                    errors.append({"type": "value_not_in_list", "message": "Value not in list",
                                   "details": f"{name}: '{val}' not in {list_info}",
                                   "extra_info": {"input_name": name, "input_config": config, "received_value": val}})
                    continue

        result = (False, errors, unique_id) if errors or valid is not True else (True, [], unique_id)
        self.validated[unique_id] = result
        return result


def _lt(a: Any, b: Any) -> bool:
    try:
        return bool(a < b)
    except TypeError:
        return False


def _type_name(ex: BaseException) -> str:
    klass = type(ex)
    return klass.__qualname__ if klass.__module__ == "builtins" else f"{klass.__module__}.{klass.__qualname__}"


def validate_prompt(prompt: Mapping[str, Any], object_info: Mapping[str, Any] | None = None,
                    available_files: Mapping[str, Sequence[str]] | None = None) -> PromptValidation:
    """Validate an API-format prompt as ComfyUI 0.3.64 does on `POST /prompt`.

    `object_info` defaults to the packaged schema. `available_files` maps models/ folder names (`loras`,
    `diffusion_models`, `text_encoders`, `vae`, `pulid`, `input`, ...) to the files a pod holds; without it,
    file combos accept any name with a model extension.
    """
    if object_info is None:
        object_info = _cached_object_info()
    if not isinstance(prompt, Mapping):
        return _invalid("Prompt must be an object mapping node ids to nodes", type_="invalid_prompt")

    outputs: list[str] = []
    for node_id, node in prompt.items():
        if not isinstance(node, Mapping) or "class_type" not in node:
            return _invalid("Cannot execute because a node is missing the class_type property.",
                            f"Node ID '#{node_id}'")
        class_type = node["class_type"]
        if not isinstance(class_type, str) or class_type not in object_info:
            return _invalid(f"Cannot execute because node {class_type} does not exist.", f"Node ID '#{node_id}'")
        if object_info[class_type].get("output_node") is True:
            outputs.append(node_id)
    if not outputs:
        return _invalid("Prompt has no outputs", type_="prompt_no_outputs")

    validator = _Validator(prompt, object_info, available_files)
    good_outputs: list[str] = []
    failed: list[tuple[str, list[dict[str, Any]]]] = []
    node_errors: dict[str, Any] = {}
    for output in sorted(outputs, key=_node_sort_key):
        try:
            valid, reasons, _ = validator.validate_inputs(output)
        except Exception as ex:  # noqa: BLE001
            valid = False
            reasons = [{"type": "exception_during_validation", "message": "Exception when validating node",
                        "details": str(ex), "extra_info": {"exception_type": _type_name(ex), "traceback": []}}]
            validator.validated[output] = (False, reasons, output)
        if valid is True:
            good_outputs.append(output)
            continue
        failed.append((output, reasons))
        # As on the server: every node that failed with its own reasons lists this output as dependent.
        for node_id, (node_valid, node_reasons, _) in validator.validated.items():
            if node_valid is not True and node_reasons:
                entry = node_errors.setdefault(node_id, {"errors": node_reasons, "dependent_outputs": [],
                                                         "class_type": prompt[node_id]["class_type"]})
                entry["dependent_outputs"].append(output)

    if not good_outputs:
        details = "\n".join(f"{e['message']}: {e['details']}" for _, reasons in failed for e in reasons)
        error = {"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed validation",
                 "details": details, "extra_info": {}}
        return PromptValidation(ok=False, error=error, node_errors=node_errors)
    return PromptValidation(ok=True, error=None, node_errors=node_errors, good_outputs=tuple(good_outputs))


def _node_sort_key(node_id: str) -> tuple[int, Any]:
    return (0, int(node_id)) if str(node_id).isdigit() else (1, str(node_id))
