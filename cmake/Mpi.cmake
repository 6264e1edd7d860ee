# MPI (Debian's libopenmpi-dev + openmpi-bin) for the distributed engine (engine/dist/): when found, sslight_engine
# gets SSLIGHT_WITH_MPI and MPI::MPI_C, and the MPI (and, with NCCL, the NCCL) communicators are compiled in.
# Without it the engine builds single-process only. Included from CMakeLists.txt after sslight_engine exists.
find_package(MPI COMPONENTS C QUIET)
set(SSLIGHT_WITH_MPI OFF)
if(MPI_C_FOUND)
  set(SSLIGHT_WITH_MPI ON)
  target_compile_definitions(sslight_engine PUBLIC SSLIGHT_WITH_MPI PRIVATE OMPI_SKIP_MPICXX MPICH_SKIP_MPICXX)
  target_link_libraries(sslight_engine PUBLIC MPI::MPI_C)
else()
  message(STATUS "sslight: MPI not found (install libopenmpi-dev), building the single-process communicator only")
endif()
