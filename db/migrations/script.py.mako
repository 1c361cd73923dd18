"""${message}
"""

from carrierpay.revisions import downgrade, executes

revision = ${repr(up_revision)}
down_revision = ${repr(down_revision)}

upgrade = executes(
    """
    """
)
