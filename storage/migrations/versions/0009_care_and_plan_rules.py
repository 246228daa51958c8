"""Crisis care (care events, the gentle-coaching expiry) and the resolution's time per week and safety note

Revision ID: 0009
Revises: 0005
Create Date: 2026-12-02 16:00:00.000000
"""
from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op


revision: str = '0009'
down_revision: str | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('care_events',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('layer', sqlmodel.sql.sqltypes.AutoString(length=8), nullable=False),
    sa.Column('category', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('language', sqlmodel.sql.sqltypes.AutoString(length=8), nullable=False),
    sa.Column('pattern', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True),
    sa.Column('trace_id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('care_events', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_care_events_user_id'), ['user_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_care_events_created_at'), ['created_at'], unique=False)
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.add_column(sa.Column('care_until', sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table('resolutions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('weekly_minutes', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('safety_note', sqlmodel.sql.sqltypes.AutoString(), nullable=False, server_default=''))


def downgrade() -> None:
    with op.batch_alter_table('resolutions', schema=None) as batch_op:
        batch_op.drop_column('safety_note')
        batch_op.drop_column('weekly_minutes')
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.drop_column('care_until')
    with op.batch_alter_table('care_events', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_care_events_created_at'))
        batch_op.drop_index(batch_op.f('ix_care_events_user_id'))
    op.drop_table('care_events')
