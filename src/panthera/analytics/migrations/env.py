from panthera.analytics.models import Base
from panthera.kernel.migrations import run_env

run_env(Base.metadata)
