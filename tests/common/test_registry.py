import pytest

from xraygpt.common.registry import KINDS, Registry, RegistryError, registry


def test_register_and_get_each_kind():
    reg = Registry()
    for kind in KINDS:
        obj = type(f"Thing_{kind}", (), {})
        assert getattr(reg, f"register_{kind}")("thing")(obj) is obj
        assert reg.get(kind, "thing") is obj


def test_duplicate_name_raises():
    reg = Registry()
    reg.register_model("m")(type("A", (), {}))
    with pytest.raises(RegistryError, match="already registered"):
        reg.register_model("m")(type("B", (), {}))


def test_unknown_name_lists_registered_names():
    reg = Registry()
    reg.register_task("alpha")(object)
    reg.register_task("beta")(object)
    with pytest.raises(RegistryError) as err:
        reg.get_task_class("gamma")
    assert "unknown task 'gamma'" in str(err.value)
    assert "alpha, beta" in str(err.value)


def test_unknown_kind_raises():
    with pytest.raises(RegistryError, match="unknown registry kind"):
        Registry().get("widget", "x")


def test_global_registry_loads_the_shipped_components():
    # Every kind the configs use has at least one registered name.
    for kind in ("model", "builder", "processor", "task", "runner", "lr_scheduler"):
        assert registry.names(kind), f"nothing registered as {kind}"
