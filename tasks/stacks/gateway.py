"""A stack's gateway: one LiteLLM proxy container on the head that routes by model name to the entries.

Its configuration (templates/gateway.yaml.j2) lists one route per entry: the entry's served model name
to `hosted_vllm/<name>` at the entry's address. The container is replaced only when that configuration,
the image or its arguments change (the inputs label, as for a server), and it counts as ready once
`/v1/models` lists every route. LiteLLM has no hot reload without a database: new routes mean a restart.
The stack's key is checked by templates/gateway_auth.py (LiteLLM's custom_auth: 401 for a missing or
wrong key); an entry on another node gets a key of its own (stack_keys), which its route presents. Every
key reaches the container through the secret env file (container_create: stdin, mode 0600, removed after
`docker create`), never on a command line, and the configuration names each as `os.environ/NAME`.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from typing import Callable

from .. import masking, render, settings
from ..facts import docker
from ..ops import answers as steps, execute, readiness
from ..ops.commands import Command, Input
from ..ops.container_create import create_argv
from . import keys as stack_keys
from ..facts.docker import LABEL
from ..connect import Connector
from ..errors import ConfigError, NotReadyError, RunError
from ..ops.launch import POLL_SECONDS, SCRIPT_DIR, base_url, script_tar
from ..report import Ready, emit, say
from .files import entry_id, gateway_container as container_name
from .plan import StackPlan

CONFIG = "gateway.yaml"
AUTH = settings.CODE_ROOT / "templates" / "gateway_auth.py"
AUTH_MODULE = "runrecipe_gateway_auth"   # LiteLLM loads <module>.py from the folder of its configuration
READY_TIMEOUT = 180.0


@dataclass(frozen=True)
class Route:
    model: str          # the served model name clients ask for
    api_base: str       # the entry's OpenAI base URL, as the head reaches it
    entry: str = ""     # the entry's container name
    key_var: str = ""   # the variable holding the entry's own key (an entry on another node); "" for none


@dataclass(frozen=True)
class GatewayPlan:
    stack: str
    name: str            # container name
    port: int
    key_env: str         # "" when the gateway needs no key
    image: str
    routes: tuple[Route, ...]
    config: str          # the rendered LiteLLM configuration

    @property
    def id(self) -> str:
        """Its `runrecipe.recipe` label: status lists it with the stack's entries."""
        return entry_id(self.stack, self.name)

    @property
    def endpoint(self) -> str:
        return f"http://localhost:{self.port}/v1"

    def args(self, image_id: str) -> list[str]:
        """`docker create` arguments (labels excluded): host network, offline cost map; the keys go in the
        env file (secret_env)."""
        env = ["-e", "LITELLM_LOCAL_MODEL_COST_MAP=True", "-e", "LITELLM_TELEMETRY=False"]
        return ["--name", self.name, "--network", "host", "--init", *env, "--entrypoint", "litellm", image_id,
                "--config", f"{SCRIPT_DIR}/{CONFIG}", "--host", "0.0.0.0", "--port", str(self.port)]

    def files(self) -> dict[str, str]:
        """What goes in the container's SCRIPT_DIR: the configuration and the key check it names."""
        return {CONFIG: self.config, **({f"{AUTH_MODULE}.py": AUTH.read_text()} if self.key_env else {})}


def secret_env(gw: GatewayPlan, key: str) -> dict[str, str]:
    """The container's secret variables: the stack's key and each route's entry key, derived from it."""
    routes = {r.key_var: stack_keys.entry_key(key, gw.stack, r.entry) for r in gw.routes if r.key_var}
    return ({gw.key_env: key} if gw.key_env else {}) | routes


def plan_gateway(stack_plan: StackPlan) -> GatewayPlan | None:
    """The gateway of a stack, or None when the file has none; two entries serving one name are refused."""
    gateway = stack_plan.stack.gateway
    if gateway is None:
        return None
    routes: dict[str, Route] = {}
    for placed in stack_plan.entries:
        model = placed.plan.served_model or placed.plan.recipe.name
        if model in routes:
            field = ("models", placed.entry.index)
            raise ConfigError(f"{stack_plan.stack.where(field)}: two entries serve the model name '{model}'; "
                              "the gateway routes by name, so each needs its own (--served-model-name in "
                              "extra_args)", file=str(stack_plan.stack.path), field=field)
        keyed = bool(placed.plan.api_key)  # an entry on another node: the stack gave it its own key
        routes[model] = Route(model, base_url(placed.plan) + "/v1", placed.plan.container_name,
                              stack_keys.route_key_var(len(routes)) if keyed else "")
    ordered = tuple(routes.values())
    config = render.render_template(f"{CONFIG}.j2", stack=stack_plan.name, routes=ordered,
                                    key_env=gateway.api_key_env, auth=f"{AUTH_MODULE}.check")
    return GatewayPlan(stack_plan.name, container_name(stack_plan.name), gateway.port, gateway.api_key_env,
                       settings.gateway_image(), ordered, config)


def api_key(gw: GatewayPlan) -> str:
    """The key from the environment, checked (LiteLLM wants `sk-...`); never printed."""
    if not gw.key_env:
        return ""
    key = os.environ.get(gw.key_env, "")
    if not key.startswith("sk-") or key == "sk-":
        why = ("not set" if not key else "set but does not start with 'sk-'" if not key.startswith("sk-")
               else "set to 'sk-' alone, an empty key")
        raise ConfigError(f"gateway: the environment variable {gw.key_env} (api_key_env) is {why}; LiteLLM's "
                          "master key must start with sk- and go on", fix=f"export {gw.key_env}=sk-...")
    masking.remember_secret(key)  # masked in every later message, whatever the variable is called
    return key


def image_id(runner: Connector, gw: GatewayPlan) -> str:
    found = docker.image_id(runner, gw.image)
    if not found:
        raise RunError(f"the gateway image '{gw.image}' is not on {runner.node}: `docker pull {gw.image}`, or "
                       "name another LiteLLM proxy image in RUNRECIPE_GATEWAY_IMAGE")
    return found


def digest(gw: GatewayPlan, image: str, key: str = "") -> str:
    """The gateway's inputs; the key counts by its hash (Docker copies it at create time, so a new key
    needs a new container), never in clear."""
    return hashlib.sha256(json.dumps([gw.args(image), gw.files(), hashlib.sha256(key.encode()).hexdigest()
                                      if key else ""]).encode()).hexdigest()


def answer(runner: Connector, gw: GatewayPlan) -> steps.Answer:
    """Noop when the gateway runs with the current routes and image and lists every route."""
    key = api_key(gw)
    try:
        image = image_id(runner, gw)
    except RunError as exc:
        return steps.Change(f"cannot start yet: {str(exc).splitlines()[0]}")
    want = digest(gw, image, key)
    running = docker.containers(runner, recipe=gw.id)
    current = [c for c in running if c.running and c.labels.get(f"{LABEL}.inputs") == want]
    return steps.launch(gw.name, want, running, answering=bool(current) and _lists_all(gw, key), node=runner.node,
                        start=start_commands(runner.node, gw, image, want, key))


def converge(runner: Connector, gw: GatewayPlan) -> dict[str, str]:
    """Start (or replace) the gateway and wait until it lists every route."""
    key = api_key(gw)
    image = image_id(runner, gw)
    want = digest(gw, image, key)
    running = docker.containers(runner, recipe=gw.id)
    current = [c for c in running if c.running and c.labels.get(f"{LABEL}.inputs") == want]
    if current:
        wait_ready(runner, gw, current[0].id, key)
        emit(Ready(f"gateway already serving at {gw.endpoint} ({len(gw.routes)} models)", gw.endpoint))
        return {"container_id": current[0].id, "inputs": want}
    named = docker.container_named(runner, gw.name)
    if named and named.id not in {c.id for c in running}:
        raise RunError(f"a container named '{gw.name}' exists on {runner.node} and is not this stack's gateway; "
                       "remove it or rename the stack")
    if running:
        say(f"replacing the gateway {gw.name}: its routes or image changed")
        execute.run_each(runner, steps.clear(runner.node, running))
    create, *rest = start_commands(runner.node, gw, image, want, key)
    cid = execute.run(runner, create).stdout.strip()
    try:
        execute.run_each(runner, rest)
        say(f"started the gateway {gw.name}; waiting for {gw.endpoint} ...")
        wait_ready(runner, gw, cid, key)
    except BaseException:
        execute.run_each(runner, steps.remove(runner.node, [cid]))
        raise
    emit(Ready(f"gateway serving {', '.join(r.model for r in gw.routes)} at {gw.endpoint}", gw.endpoint))
    return {"container_id": cid, "inputs": want}


def start_commands(node: str, gw: GatewayPlan, image: str, want: str, key: str) -> list[Command]:
    """docker create (the keys in the env file on stdin), copy the configuration in (a tar on stdin), docker
    start: by the container's name, as a server's are (launch.start_commands); `create` prints its ID. No clock
    label: `started` is Docker's own creation time (facts.docker), so a plan shows these very commands."""
    labels = {"recipe": gw.id, "stack": gw.stack, "inputs": want, "endpoint": gw.endpoint}
    label_args = [a for k, v in labels.items() for a in ("--label", f"{LABEL}.{k}={v}")]
    secrets = secret_env(gw, key)
    env = Input(f"env file: {', '.join(sorted(secrets))}" if secrets else "env file: empty",
                lambda: "".join(f"{k}={v}\n" for k, v in secrets.items()).encode(), secret=True)
    files = gw.files()
    tar = Input(f"tar: {', '.join(f'{SCRIPT_DIR}/{name}' for name in files)}", lambda: script_tar(files))
    return [Command(tuple(create_argv((), [*label_args, *gw.args(image)])), node, env, timeout=120),
            Command(("docker", "cp", "-", f"{gw.name}:/"), node, tar),
            Command(("docker", "start", gw.name), node, timeout=60)]


def wait_ready(runner: Connector, gw: GatewayPlan, cid: str, key: str, timeout: float = READY_TIMEOUT,
               clock: Callable[[], float] = time.monotonic) -> None:
    """Until `/v1/models` lists every route; fail fast when the container exits."""
    deadline = clock() + timeout
    while True:
        status, code = docker.state(runner, cid)
        if status in ("exited", "dead", "gone"):
            raise NotReadyError(f"the gateway container exited (code {code}) before it was ready", node=runner.node,
                                exit_code=code, tail=docker.logs_tail(runner, cid))
        if _lists_all(gw, key):
            return
        if clock() > deadline:
            raise NotReadyError(f"the gateway did not list every model after {timeout:.0f} s ({gw.endpoint}/models)",
                                node=runner.node, tail=docker.logs_tail(runner, cid))
        time.sleep(POLL_SECONDS)


def listed(port: int, key: str) -> set[str] | None:
    """The model ids the gateway on this machine lists, or None when it does not answer."""
    found = readiness.listed_models(f"http://127.0.0.1:{port}", key)
    return None if found is None else set(found)


def _lists_all(gw: GatewayPlan, key: str) -> bool:
    found = listed(gw.port, key)
    return found is not None and {r.model for r in gw.routes} <= found

