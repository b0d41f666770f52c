# blkcopy's layers, bottom up: where each one's files live and which layers it links. The
# library's CMake targets are made from this table (CMakeLists.txt), and blkcopy_check_layers()
# refuses a source that includes a header of a layer its own does not link (directly or through
# the layers it links): the build enforces the graph, and `cmake -P cmake/check_layers.cmake`
# (the `layers` test) checks a tree against it.
#
#   name         directories (not recursive) and public headers         links
set(BLKCOPY_LAYERS core block copy drivers stack nvme nvme_tcp nvme_host nvme_local scsi registry
    nvme_target capi)
set(BLKCOPY_LAYER_core_DIRS core)
set(BLKCOPY_LAYER_core_HEADERS status.h event_loop.h units.h log.h)
set(BLKCOPY_LAYER_core_LINKS)
set(BLKCOPY_LAYER_block_DIRS block)
set(BLKCOPY_LAYER_block_HEADERS device.h)
set(BLKCOPY_LAYER_block_LINKS core)
set(BLKCOPY_LAYER_copy_DIRS copy)
set(BLKCOPY_LAYER_copy_HEADERS copy.h service.h)
set(BLKCOPY_LAYER_copy_LINKS block)
set(BLKCOPY_LAYER_drivers_DIRS drivers/mem drivers/file)
set(BLKCOPY_LAYER_drivers_LINKS block)
set(BLKCOPY_LAYER_stack_DIRS stack)
set(BLKCOPY_LAYER_stack_HEADERS clone.h)
set(BLKCOPY_LAYER_stack_LINKS copy)
set(BLKCOPY_LAYER_nvme_DIRS nvme nvme/auth)            # the protocol: spec, codec, status, auth
set(BLKCOPY_LAYER_nvme_LINKS block)
set(BLKCOPY_LAYER_nvme_tcp_DIRS nvme/tcp)              # the transport: framing, send queue, TLS
set(BLKCOPY_LAYER_nvme_tcp_LINKS nvme)
set(BLKCOPY_LAYER_nvme_host_DIRS nvme/host)
set(BLKCOPY_LAYER_nvme_host_LINKS nvme_tcp block)
set(BLKCOPY_LAYER_nvme_local_DIRS drivers/nvme)       # local NVMe through io_uring passthrough
set(BLKCOPY_LAYER_nvme_local_LINKS nvme)
set(BLKCOPY_LAYER_scsi_DIRS drivers/scsi)              # SCSI LUNs: EXTENDED COPY through SG_IO
set(BLKCOPY_LAYER_scsi_LINKS drivers)                  # the block device's data path is a file
set(BLKCOPY_LAYER_registry_DIRS registry)              # device strings -> drivers, stacks, hosts
set(BLKCOPY_LAYER_registry_HEADERS open.h)
set(BLKCOPY_LAYER_registry_LINKS drivers stack nvme_host nvme_local scsi)
set(BLKCOPY_LAYER_nvme_target_DIRS nvme/target)
set(BLKCOPY_LAYER_nvme_target_HEADERS target.h)
set(BLKCOPY_LAYER_nvme_target_LINKS registry copy nvme_tcp)
set(BLKCOPY_LAYER_capi_DIRS capi)
set(BLKCOPY_LAYER_capi_HEADERS blkcopy.h)
set(BLKCOPY_LAYER_capi_LINKS registry copy)

# The layers `layer` may include: itself and everything it links, transitively.
function(blkcopy_layer_closure layer out)
  set(seen ${layer})
  set(todo ${BLKCOPY_LAYER_${layer}_LINKS})
  while(todo)
    list(POP_FRONT todo l)
    if(NOT l IN_LIST seen)
      list(APPEND seen ${l})
      list(APPEND todo ${BLKCOPY_LAYER_${l}_LINKS})
    endif()
  endwhile()
  set(${out} ${seen} PARENT_SCOPE)
endfunction()

# The layer that owns a path relative to the root ("" when none).
function(blkcopy_layer_of path out)
  get_filename_component(dir ${path} DIRECTORY)
  get_filename_component(name ${path} NAME)
  foreach(l ${BLKCOPY_LAYERS})
    if(dir IN_LIST BLKCOPY_LAYER_${l}_DIRS OR
       (dir STREQUAL "include/blkcopy" AND name IN_LIST BLKCOPY_LAYER_${l}_HEADERS))
      set(${out} ${l} PARENT_SCOPE)
      return()
    endif()
  endforeach()
  set(${out} "" PARENT_SCOPE)
endfunction()

# The .cc and .h files of a layer (paths relative to root).
function(blkcopy_layer_files root layer out)
  set(files)
  foreach(d ${BLKCOPY_LAYER_${layer}_DIRS})
    if(CMAKE_SCRIPT_MODE_FILE)
      file(GLOB f RELATIVE ${root} ${root}/${d}/*.cc ${root}/${d}/*.h)
    else()
      file(GLOB f RELATIVE ${root} CONFIGURE_DEPENDS ${root}/${d}/*.cc ${root}/${d}/*.h)
    endif()
    list(APPEND files ${f})
  endforeach()
  foreach(h ${BLKCOPY_LAYER_${layer}_HEADERS})
    list(APPEND files include/blkcopy/${h})
  endforeach()
  set(${out} ${files} PARENT_SCOPE)
endfunction()

# Every include of a project header in a layer's files must name a header of a layer it may
# include. Fails with one line per violation.
function(blkcopy_check_layers root)
  set(errors)
  set(count 0)
  foreach(layer ${BLKCOPY_LAYERS})
    blkcopy_layer_closure(${layer} allowed)
    blkcopy_layer_files(${root} ${layer} files)
    foreach(file ${files})
      math(EXPR count "${count} + 1")
      file(STRINGS ${root}/${file} includes
           REGEX "^#include [<\"](blkcopy|core|block|copy|drivers|stack|nvme|registry|capi|tools)/")
      foreach(line ${includes})
        string(REGEX REPLACE "^#include [<\"]([^>\"]+)[>\"].*" "\\1" inc "${line}")
        if(inc MATCHES "^blkcopy/")
          set(inc include/${inc})
        endif()
        blkcopy_layer_of(${inc} owner)
        if(owner STREQUAL "")
          list(APPEND errors "${file} includes ${inc}, which belongs to no layer")
        elseif(NOT owner IN_LIST allowed)
          list(APPEND errors "${file} (layer ${layer}) includes ${inc} (layer ${owner}), which ${layer} does not link")
        endif()
      endforeach()
    endforeach()
  endforeach()
  if(errors)
    list(JOIN errors "\n  " text)
    message(FATAL_ERROR "layers: a layer includes a header it may not:\n  ${text}\n"
                        "(the graph is in cmake/layers.cmake)")
  endif()
  message(STATUS "layers: ${count} files checked against the layer graph")
endfunction()
