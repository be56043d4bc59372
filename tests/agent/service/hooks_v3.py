"""Hooks shipped with the v1 -> v3_hooks patch: module-level state that the live module never ran.

pre_patch, not post_patch: the attribute must exist before the first call of the new code, and the old
code does not mind an extra module attribute.
"""


def pre_patch(ctx):
    ctx.modules["greetsvc.handlers"].PREFIX = "hey"
    ctx.modules["greetsvc.handlers"].SEPARATOR = " "


def post_revert(ctx):
    del ctx.modules["greetsvc.handlers"].PREFIX
    del ctx.modules["greetsvc.handlers"].SEPARATOR
