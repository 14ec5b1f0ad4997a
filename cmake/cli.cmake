# The `xent` command-line tool (included by the top-level CMakeLists.txt when
# host/cli.c exists and XENT_BUILD_CLI is ON). One executable: the subcommand
# table and shared pieces (host/cli.c), one file per subcommand
# (host/cli_<name>.c), the .npy reader/writer and the timing harness
# (bench/bench.c). It links the static library, which carries the CUDA
# runtime statically: the binary needs only the driver, and only on a GPU.
set(XENT_CLI_SOURCES
  host/cli.c
  host/cli_loss.c
  host/cli_bench.c
  host/cli_info.c
  host/npy.c
  bench/bench.c)
# Subcommands added later (host/cli_entropy.c, ...) join automatically.
file(GLOB XENT_CLI_EXTRA_SOURCES CONFIGURE_DEPENDS
  ${CMAKE_CURRENT_SOURCE_DIR}/host/cli_*.c)
list(TRANSFORM XENT_CLI_SOURCES PREPEND ${CMAKE_CURRENT_SOURCE_DIR}/)
list(APPEND XENT_CLI_SOURCES ${XENT_CLI_EXTRA_SOURCES})
list(REMOVE_DUPLICATES XENT_CLI_SOURCES)

add_executable(xent ${XENT_CLI_SOURCES})
target_include_directories(xent PRIVATE
  ${CMAKE_CURRENT_SOURCE_DIR}/host ${CMAKE_CURRENT_SOURCE_DIR}/bench)
target_link_libraries(xent PRIVATE xent_static)
target_compile_options(xent PRIVATE ${XENT_C_WARNINGS})
target_compile_definitions(xent PRIVATE XENT_CLI_VERSION="${PROJECT_VERSION}")
set_target_properties(xent PROPERTIES LINKER_LANGUAGE C)

install(TARGETS xent RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
