from panthera.kernel.migrations import run_env
from panthera.notifications.models import Base

run_env(Base.metadata)
