# cmake -D ROOT=<tree> -P cmake/check_layers.cmake: checks a source tree against the layer graph.
cmake_minimum_required(VERSION 3.25)
include(${CMAKE_CURRENT_LIST_DIR}/layers.cmake)
if(NOT ROOT)
  get_filename_component(ROOT ${CMAKE_CURRENT_LIST_DIR}/.. ABSOLUTE)
endif()
blkcopy_check_layers(${ROOT})
