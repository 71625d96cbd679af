"""The Modal generation web endpoints (`/flux-lora`, `/qwen-image-2512-lora`, `/standard`, `/face-swap`), called
with Modal's proxy-auth headers. The simulated service speaks the same routes, so one client serves both."""

from __future__ import annotations

from pydantic import SecretStr

from lora_pipelines.gpu.http import RetryingHttp
from lora_pipelines.gpu.schemas import GENERATION_ROUTES, FaceSwapRequest, GenerateRequest, GenerateResponse


def _reveal(value: SecretStr | str | None) -> str | None:
    return value.get_secret_value() if isinstance(value, SecretStr) else value


def endpoint_url(base: str, route: str) -> str:
    """`https://ws--{route}.modal.run` → route substituted (no slash); otherwise `{base}/{route}`."""
    if "{route}" in base:
        return base.replace("{route}", route)
    return f"{base.rstrip('/')}/{route}"


class ModalEndpointsClient:
    def __init__(self, base_url: str, *, key: SecretStr | str | None = None, secret: SecretStr | str | None = None,
                 timeout_s: float = 300.0, attempts: int = 4, name: str = "modal") -> None:
        self.name = name
        self.base_url = base_url
        key_value, secret_value = _reveal(key), _reveal(secret)
        headers = {"Modal-Key": key_value, "Modal-Secret": secret_value} if key_value and secret_value else {}
        self.http = RetryingHttp(name, "", timeout_s=timeout_s, attempts=attempts, headers=headers,
                                 secrets=(key_value, secret_value), throttle_key=base_url)

    def generate(self, route: str, request: GenerateRequest) -> GenerateResponse:
        route = route.strip("/")
        if route not in GENERATION_ROUTES or route == "face-swap":
            raise ValueError(
                f"unknown generation route {route!r}; use one of flux-lora, qwen-image-2512-lora, standard")
        return self._post(route, request.model_dump(mode="json"))

    def face_swap(self, request: FaceSwapRequest) -> GenerateResponse:
        return self._post("face-swap", request.model_dump(mode="json"))

    def _post(self, route: str, body: dict) -> GenerateResponse:
        data = self.http.json("POST", endpoint_url(self.base_url, route), endpoint=f"/{route}", json=body)
        return self.http.parse(GenerateResponse, data, endpoint=f"/{route}")

    def close(self) -> None:
        self.http.close()
