"""The business clock can be held: it then stands still until an operator moves it.

"""

from carrierpay.revisions import downgrade, executes

revision = "0010"
down_revision = "0009"

upgrade = executes(
    """
        alter table cp.clock_offset add column held_at timestamptz;
        comment on column cp.clock_offset.held_at is
            'When set, cp.clock_now() reads this instead of now() + offset_by: time stands still until moved';
        """
)
