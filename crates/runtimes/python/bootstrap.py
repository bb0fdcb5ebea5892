# The entry point of Stratus's Python runtime. It only imports the runtime module, which is
# precompiled when Stratus starts, so no cold start pays for compiling it.
import stratus_bootstrap

stratus_bootstrap.main()
