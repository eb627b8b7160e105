"""The trainer's contract (training/contract.py) agrees with everyone who writes or reads it: the trainer's
emit calls, the L2PTrain node, and the fields the frontend's panel reads (js/l2p.js)."""

from __future__ import annotations

import ast
import dataclasses
import pathlib
import re
import sys

import pytest

from training.contract import (
    EVENTS,
    WS_EVENT,
    TrainConfig,
    error_line,
    event_line,
    help_text,
    load_toml,
    parse_event,
    to_toml,
    ws_payload,
)

REPO = pathlib.Path(__file__).resolve().parents[1]


def emit_calls(path: pathlib.Path) -> list[ast.Call]:
    return [n for n in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
            if isinstance(n, ast.Call) and getattr(n.func, "attr", getattr(n.func, "id", "")) in ("emit", "_emit")]


def test_the_trainer_emits_only_contract_events_with_their_fields():
    calls = emit_calls(REPO / "training" / "trainer.py")
    emitted = set()
    for call in calls:
        if isinstance(call.args[0], ast.Name) and [k.arg for k in call.keywords] == [None]:
            continue  # _emit's own forwarding call: emit(event, **fields)
        assert isinstance(call.args[0], ast.Constant), f"line {call.lineno}: name the event literally"
        name = call.args[0].value
        fields = [k.arg for k in call.keywords]
        assert None not in fields, f"line {call.lineno}: no **fields, name each one"
        assert name in EVENTS and sorted(fields) == sorted(EVENTS[name]), (call.lineno, name, fields)
        emitted.add(name)
    assert emitted == set(EVENTS), f"events in the contract the trainer never emits: {set(EVENTS) - emitted}"


def js_reads() -> dict[str, set[str]]:
    """The ``detail.<field>`` reads of onTrainEvent per event name ("*": outside the switch, every event)."""
    js = (REPO / "js" / "l2p.js").read_text(encoding="utf-8")
    body = js[js.index("function onTrainEvent(detail) {"):]
    body = body[:body.index("\n}\n")]
    uses = re.findall(r"\bdetail\b(.?)", body)
    assert all(u in (".", ")") for u in uses), "onTrainEvent must read the event only as detail.<field>"
    reads: dict[str, set[str]] = {"*": set()}
    group, depth, switch_depth, after_case = ["*"], 0, None, False
    for line in body.splitlines()[1:]:
        if case := re.fullmatch(r'case "(\w+)":', line.strip()):
            group = [*group, case[1]] if after_case else [case[1]]
            after_case = True
            continue
        after_case = False
        if line.strip().startswith("switch (detail.event)"):
            switch_depth = depth
        for name in group:
            reads.setdefault(name, set()).update(re.findall(r"\bdetail\.(\w+)", line))
        depth += line.count("{") - line.count("}")
        if depth == switch_depth:  # the switch closed: what follows reads every event
            group, switch_depth = ["*"], None
    return reads


def test_the_panel_reads_only_fields_the_contract_sends():
    reads = js_reads()
    assert set(reads) - {"*"} == set(EVENTS), "the panel handles every event, and only those"
    for name in EVENTS:
        event = {"event": name, **dict.fromkeys(EVENTS[name])}
        sent = ws_payload(event, "7", [] if name == "validation" else None)
        missing = (reads["*"] | reads[name]) - set(sent)
        assert not missing, f"js/l2p.js reads {sorted(missing)} of {name!r}, which training/contract.py lacks"
    assert reads["log"] >= {"step", "loss", "samples_per_s", "memory_mb"}  # the parser above sees the reads
    js = (REPO / "js" / "l2p.js").read_text(encoding="utf-8")
    assert f'api.addEventListener("{WS_EVENT}"' in js


def test_event_line_refuses_what_the_contract_lacks():
    line = event_line("checkpoint", step=3, path="/r/checkpoint-3")
    assert line == '{"event": "checkpoint", "step": 3, "path": "/r/checkpoint-3"}'  # readers match on this text
    assert parse_event(line + "\n") == {"event": "checkpoint", "step": 3, "path": "/r/checkpoint-3"}
    with pytest.raises(ValueError, match="unknown trainer event 'saved'"):
        event_line("saved", step=3)
    with pytest.raises(ValueError, match="takes the fields step, path"):
        event_line("checkpoint", step=3, path="p", extra=1)
    with pytest.raises(ValueError, match="takes the fields step, path"):
        event_line("checkpoint", step=3)


@pytest.mark.parametrize("line", ["training:  50%|#####     | 1/2", "", "{not json", '{"loss": 1}',
                                  '{"event": "saved", "step": 1}', '["event"]', "\n"])
def test_parse_event_skips_what_is_not_an_event(line):
    assert parse_event(line) is None


def test_ws_payload_adds_the_node_and_views():
    ev = {"event": "validation", "step": 2, "images": ["/o/a.png"]}
    assert ws_payload(ev, "5", [{"filename": "a.png"}]) == {"node": "5", **ev, "view": [{"filename": "a.png"}]}
    assert ws_payload({"event": "stopped", "step": 2}, "5") == {"node": "5", "event": "stopped", "step": 2}


def test_config_round_trips_through_toml(tmp_path):
    cfg = TrainConfig(model="C:\\models\\a \"b\".safetensors", dataset="ds\tnew\nline é 😀 \x7f", steps=7, lr=1e-4,
                      fixed_noise=False, extra={"note": "x"})
    path = tmp_path / "run.toml"
    path.write_text(to_toml(cfg), encoding="utf-8")
    values = load_toml(str(path))
    assert TrainConfig(**values) == cfg
    path.write_text('learning_rate = 1\n', encoding="utf-8")
    with pytest.raises(ValueError, match="unknown config key 'learning_rate'"):
        load_toml(str(path))


def test_the_node_builds_its_config_through_the_schema():
    """L2PTrain names only TrainConfig fields (it cannot be imported outside ComfyUI, so read statically)."""
    tree = ast.parse((REPO / "nodes" / "train.py").read_text(encoding="utf-8"))
    built = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "TrainConfig"]
    assert len(built) == 1
    names = {k.arg for k in built[0].keywords}
    assert names <= {f.name for f in dataclasses.fields(TrainConfig)} and {"model", "dataset", "steps"} <= names


def node_inputs(tree: ast.AST) -> dict[str, dict]:
    """L2PTrain's inputs: name -> the keyword arguments of its ``io.<Type>.Input(name, ...)`` (literals only)."""
    out = {}
    for n in ast.walk(tree):
        if isinstance(n, ast.Call) and getattr(n.func, "attr", "") == "Input" and n.args:
            kwargs = {}
            for k in n.keywords:
                try:
                    kwargs[k.arg] = ast.literal_eval(k.value)
                except ValueError:
                    kwargs[k.arg] = None
            out[ast.literal_eval(n.args[0])] = kwargs
    return out


def test_every_node_input_that_names_a_config_field_reaches_the_config():
    """An input named like a TrainConfig field is passed into the config the node builds (as a TrainConfig
    keyword or a later ``cfg.<field> =``), from the execute argument of the same name."""
    tree = ast.parse((REPO / "nodes" / "train.py").read_text(encoding="utf-8"))
    inputs = node_inputs(tree)
    (built,) = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "TrainConfig"]
    passed = {k.arg: k.value for k in built.keywords}
    assigned = {t.attr for n in ast.walk(tree) if isinstance(n, ast.Assign) for t in ast.walk(n)
                if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and t.value.id == "cfg"
                and isinstance(t.ctx, ast.Store)}
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    for name in sorted(set(inputs) & fields):
        assert name in passed or name in assigned, f"L2PTrain input {name} never reaches TrainConfig"
        if name in passed and isinstance(passed[name], ast.Name):
            assert passed[name].id == name, f"TrainConfig({name}=...) is given {passed[name].id}"
    (execute,) = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "execute"]
    assert [a.arg for a in execute.args.args[1:]] == list(inputs), "execute's arguments follow the inputs"
    # the second learning rate: the weights L2P adds (head, pixel embedder), 0 = lr, as in the contract
    assert inputs["lr_new"]["default"] == TrainConfig().lr_new == 0.0 and inputs["lr_new"]["min"] == 0.0
    assert inputs["lr_new"]["optional"] is True and "0: lr" in inputs["lr_new"]["tooltip"]
    assert isinstance(passed["lr_new"], ast.Name) and passed["lr_new"].id == "lr_new"


def test_the_contract_is_stdlib_only_and_the_nodes_only_training_import():
    """The node imports it inside ComfyUI, where training's torch modules must not load."""
    tree = ast.parse((REPO / "training" / "contract.py").read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            assert node.level == 0 and node.module.split(".")[0] in sys.stdlib_module_names | {"__future__"}
        elif isinstance(node, ast.Import):
            assert all(a.name.split(".")[0] in sys.stdlib_module_names | {"tomli"} for a in node.names)
    for path in (REPO / "nodes").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("training"):
                assert node.level == 2 and node.module == "training.contract", path.name


def test_every_field_has_a_description_and_its_default_in_help_text():
    for f in dataclasses.fields(TrainConfig):
        assert len(f.metadata.get("help", "").split()) >= 3, f"{f.name}: give it metadata help= (--help shows it)"
        assert help_text(f).startswith(f.metadata["help"])
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    assert help_text(fields["steps"]).endswith("(default: 1000)")
    assert help_text(fields["fixed_noise"]).endswith("(default: true)")
    assert help_text(fields["export_layout"]).endswith('(default: "official")')
    assert help_text(fields["extra"]).endswith("(default: {})")


@pytest.mark.parametrize(("toml", "message"), [
    ('steps = "ten"\n', 'steps = "ten" must be a whole number (the default is steps = 1000)'),
    ("steps = 1.5\n", "steps = 1.5 must be a whole number"),
    ("steps = true\n", "steps = true must be a whole number"),
    ("lr = \"fast\"\n", 'lr = "fast" must be a number'),
    ("lr = inf\n", "lr = inf must be a finite number"),
    ("shuffle = 1\n", "shuffle = 1 must be true or false"),
    ("model = 3\n", "model = 3 must be text in quotes"),
    ("extra = 3\n", "extra = 3 must be a [extra] table"),
])
def test_load_toml_refuses_values_of_the_wrong_type(tmp_path, toml, message):
    path = tmp_path / "run.toml"
    path.write_text(toml, encoding="utf-8")
    with pytest.raises(ValueError) as e:
        load_toml(str(path))
    assert str(e.value).startswith(f"{path}: {message}"), str(e.value)


def test_load_toml_takes_an_integer_for_a_float(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text("lr = 1\nshift = 3\nsteps = 5\n", encoding="utf-8")
    assert TrainConfig(**load_toml(str(path))) == TrainConfig(lr=1, shift=3, steps=5)


def test_check_refuses_a_wrong_type_and_an_unwritable_output_dir(tmp_path):
    model, ds = tmp_path / "m.safetensors", tmp_path / "ds"
    model.write_bytes(b"")
    ds.mkdir()
    with pytest.raises(ValueError, match=r"^steps = \"ten\" must be a whole number"):
        TrainConfig(model=str(model), dataset=str(ds), steps="ten").check()
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match=r"output_dir .* cannot be written \(.*file is a file, not a folder\)"):
        TrainConfig(model=str(model), dataset=str(ds), output_dir=str(tmp_path / "file" / "run")).check()
    TrainConfig(model=str(model), dataset=str(ds), output_dir=str(tmp_path / "new" / "run")).check()
    assert not (tmp_path / "new").exists()  # looked, created nothing


@pytest.mark.parametrize(("line", "error"), [
    ("error: dataset ds: 1 of 4 items unusable\n", "dataset ds: 1 of 4 items unusable"),
    ("training:  50%|#####     | 1/2\rerror: none of the items loads\n", "none of the items loads"),
    ("warning: item 00001 skipped\n", None),
    ("ValueError: error: not at the start\n", None),
    ("  File \"x.py\", line 1\n", None),
])
def test_error_line_finds_the_trainers_refusal(line, error):
    assert error_line(line) == error
