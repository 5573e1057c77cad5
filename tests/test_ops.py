"""The vig.ops setting: which implementation each op gets, chosen when a layer is built."""
import pytest

from vig import ops as vig_ops
from vig.models import create_model
from vig.models.layers import GELU, Conv2d

from conftest import TINY_ISOTROPIC


def test_native_setting_builds_no_kernel_and_is_scoped():
    net = create_model("vig_ti_224_gelu", num_classes=5, ops="native", **TINY_ISOTROPIC)
    assert set(vig_ops.implementations(net).values()) == {"native"}
    with vig_ops.use("native"):
        inside = GELU()
    after = GELU()  # the default ("auto") is back after the block; cells built inside keep theirs
    assert inside.gelu.implementation == "native"
    assert after.gelu.implementation == ("kernel" if vig_ops.library("vig_gelu.cc") else "native")


def test_per_op_setting_overrides_the_default_for_that_op_only():
    with vig_ops.use("native", bias_add="auto"):
        conv = Conv2d(3, 8, 1)
    assert conv.conv.implementation == "native"
    assert conv.bias_add.implementation == ("kernel" if vig_ops.library("vig_norm.cc") else "native")


@pytest.mark.parametrize("setting,per_op,message", [("fast", {}, "setting 'fast'"),
                                                    ("auto", {"gleu": "native"}, "unknown op 'gleu'"),
                                                    ("auto", {"gelu": "tensorrt"}, "setting 'tensorrt' for gelu")])
def test_unknown_setting_or_op_is_refused_naming_it(setting, per_op, message):
    with pytest.raises(ValueError, match=message):
        with vig_ops.use(setting, **per_op):
            pass
