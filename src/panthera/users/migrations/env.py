from panthera.kernel.migrations import run_env
from panthera.users.models import Base

run_env(Base.metadata)
