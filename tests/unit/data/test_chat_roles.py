"""A conversation's roles are the chat roles templates render; any other is one line, not a message
rendered as a line no template knows."""

import pytest

from assay.data.schemas import CHAT_ROLES, as_messages
from assay.errors import UserError


def test_standard_and_sharegpt_roles_are_read():
    msgs = as_messages([{"role": "system", "content": "s"}, {"from": "human", "value": "q"}, {"role": "tool", "content": "t"}, {"from": "gpt", "value": "a"}], "messages")
    assert [m["role"] for m in msgs] == ["system", "user", "tool", "assistant"] and set(m["role"] for m in msgs) <= set(CHAT_ROLES)


@pytest.mark.parametrize("role", ["narrator", "User", "bot"])
def test_a_role_outside_the_chat_roles_is_one_line(role):
    with pytest.raises(UserError, match=f"role '{role}' is not one of the chat roles"):
        as_messages([{"role": role, "content": "hi"}, {"role": "assistant", "content": "a"}], "messages")
