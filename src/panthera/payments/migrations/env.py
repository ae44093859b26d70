from panthera.kernel.migrations import run_env
from panthera.payments.models import Base

run_env(Base.metadata)
